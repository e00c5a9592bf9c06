// Probe: finds a server's session cap for one account by opening sessions
// until the server refuses (DESIGN section 8, "Probe"). For a quiet target:
// every session it opens is one more than dsb counts, so dsbctl checks the
// broker first and refuses a busy target unless forced.
//
// Backends: dsb-simserver ("HOST:PORT" plus a user) and PostgreSQL
// ("postgresql://USER@HOST:PORT/DB"; a refusal is SQLSTATE 53300 "too many
// connections for role"). Sessions are closed when the probe ends (PostgreSQL:
// confirmed, so the server no longer counts them when the probe returns).
//
// Thread rule: one thread.
#ifndef DSB_TOOLS_DSBCTL_PROBE_H_
#define DSB_TOOLS_DSBCTL_PROBE_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace dsb::ctl {

struct ProbeOptions {
  std::string server;  // HOST:PORT (simserver) or postgresql://USER@HOST:PORT/DB
  std::string user;    // simserver account (ignored for PostgreSQL: the URL names it)
  std::uint32_t max_sessions = 1000;  // stop without a refusal after this many
  std::chrono::milliseconds io_timeout{5000};
};

struct ProbeResult {
  bool ok = false;              // false: an error (message says which); nothing found
  bool refused = false;         // the server refused: opened is its cap for this account now
  std::uint32_t opened = 0;     // sessions the server accepted before the refusal
  std::string refusal;          // the server's refusal text
  std::string message;          // an error, or a note
};

ProbeResult Probe(const ProbeOptions& options);

}  // namespace dsb::ctl

#endif  // DSB_TOOLS_DSBCTL_PROBE_H_
