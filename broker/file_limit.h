// The broker's file-descriptor budget (issue 9): at start the soft
// RLIMIT_NOFILE is raised to the hard limit where allowed, and max_clients is
// fitted under it, so that accept() never runs out of descriptors in normal
// operation (AcceptGuard handles what is left: other processes' use of the
// system-wide table, a budget that was wrong).
//
// Policy: a max_clients that does not fit is LOWERED (with a warning naming
// the limit, the need and what to change), not refused: a broker that serves
// fewer clients is better than none after a service manager's default limit
// changed. A limit too small for even one client is refused.
//
// Thread rule: call before the io_context runs (it changes process limits).
#ifndef DSB_BROKER_FILE_LIMIT_H_
#define DSB_BROKER_FILE_LIMIT_H_

#include <cstdint>
#include <string>

#include "broker/config/broker_config.h"
#include "common/status.h"

namespace dsb::broker {

// Descriptors the broker needs besides one per registered client.
// Every local connection that has not registered (max_unregistered), the
// standard streams, the log, the spare descriptors, lock and state files,
// segments and limit_command pipes, and in cluster mode the listener, the
// unauthenticated bound (kMaxUnauthenticated) and two per broker in the
// cluster file, plus a margin for the io_context's own descriptors.
std::uint64_t FixedDescriptors(const config::BrokerConfig& config);

struct FileBudget {
  std::uint64_t soft_before = 0;  // RLIMIT_NOFILE soft limit found
  std::uint64_t soft = 0;         // after raising (== soft_before if not raised)
  std::uint64_t hard = 0;
  std::uint64_t needed = 0;       // max_clients (as configured) + FixedDescriptors
  int max_clients = 0;            // what fits (== configured if it fits)
  // One line for the log and --check: the limit, and, when max_clients was
  // lowered, why and what to change. Empty when nothing needs saying.
  std::string note;
  bool lowered = false;  // max_clients was lowered to fit
};

// Fits `config.max_clients` under the file limit. With `raise`, first raises
// the soft limit towards the hard one (as far as needed: never beyond what the
// budget uses, never above the hard limit).
// Success: the budget; config.max_clients is set to FileBudget::max_clients.
// Failure (kConfig): the (raised) limit leaves no room for a single client,
// naming the limit, what is needed and how to raise it.
Result<FileBudget> FitFileLimit(config::BrokerConfig& config, bool raise);

}  // namespace dsb::broker

#endif  // DSB_BROKER_FILE_LIMIT_H_
