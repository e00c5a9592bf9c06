// Quoting untrusted text for error messages.
#ifndef DSB_BROKER_CONFIG_QUOTE_H_
#define DSB_BROKER_CONFIG_QUOTE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace dsb::config {

// `text` in double quotes for a message: quotes, backslashes and bytes outside printable
// ASCII are escaped (\", \\, \xNN), and text longer than `max_bytes` is cut with "...".
// The result is always printable ASCII, whatever the input.
std::string Quote(std::string_view text, std::size_t max_bytes = 80);

// `text` without quotes, bytes outside printable ASCII escaped as \xNN, cut after
// `max_bytes` with "...". For library messages that may echo parts of the input.
std::string Printable(std::string_view text, std::size_t max_bytes = 400);

}  // namespace dsb::config

#endif  // DSB_BROKER_CONFIG_QUOTE_H_
