#include "broker/limit_command.h"

#include "broker/config/quote.h"

// The parsing of a command's output (both platforms). Running it is the
// platform's: limit_command_posix.cc (posix_spawn of /bin/sh in its own
// process group), limit_command_win.cc (refused on Windows).

namespace dsb::broker {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

Result<std::uint32_t> ParseLimitOutput(std::string_view out) {
  std::string_view t = out;
  while (!t.empty() && IsSpace(t.front())) t.remove_prefix(1);
  while (!t.empty() && IsSpace(t.back())) t.remove_suffix(1);
  auto refuse = [&] {
    return Status{Errc::kInvalidArgument,
                  "printed " + config::Quote(out, 80) +
                      "; expected one integer between 1 and 65535 (the server's session cap)"};
  };
  if (t.empty() || t.size() > 5) return refuse();
  std::uint32_t v = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return refuse();
    v = v * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (v < 1 || v > 65535) return refuse();
  return v;
}

}  // namespace dsb::broker
