// The dsb-simserver line protocol: parsing one request line (see tools/simserver/README.md).
//
// Pure functions, no I/O: the server reads a line, parses it here and answers. Every input,
// however malformed, yields either a request or a BAD_REQUEST reason; nothing throws.
#ifndef DSB_TOOLS_SIMSERVER_PROTOCOL_H_
#define DSB_TOOLS_SIMSERVER_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsb::sim {

// Longest accepted line, without its "\n". A longer line is refused and the connection closed.
inline constexpr std::size_t kMaxLineBytes = 1024;
// Longest accepted user name.
inline constexpr std::size_t kMaxUserBytes = 256;

enum class Verb { kBad, kOpen, kClose, kStats, kStatsReset, kLimit, kPing };

struct Request {
  Verb verb = Verb::kBad;
  std::string user;              // kOpen, kLimit
  std::uint64_t session_id = 0;  // kClose
  std::uint32_t limit = 0;       // kLimit
  std::string error;             // kBad: why the line was refused
};

// Parses one line (without "\n"; a trailing "\r" is ignored). Tokens are separated by one or
// more spaces. Verbs are upper case. A user is 1..kMaxUserBytes printable ASCII characters
// without spaces. Returns Verb::kBad with `error` set for anything else.
Request ParseRequest(std::string_view line);

// The refusal line, word for word what the tests and dsb-load look for:
// "ERR MAPI_E_SESSION_LIMIT 0x80040112 ec=1246 user=<user> limit=<n>".
std::string SessionLimitReply(std::string_view user, std::uint32_t limit);

// The prefix that identifies a session-limit refusal.
inline constexpr std::string_view kSessionLimitPrefix = "ERR MAPI_E_SESSION_LIMIT";

}  // namespace dsb::sim

#endif  // DSB_TOOLS_SIMSERVER_PROTOCOL_H_
