#include "broker/file_limit.h"

#ifndef _WIN32
#include <sys/resource.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "broker/cluster_gate.h"

namespace dsb::broker {

std::uint64_t FixedDescriptors(const config::BrokerConfig& config) {
  const auto targets = static_cast<std::uint64_t>(config.targets.size());
  std::uint64_t n = 3;                  // stdin, stdout, stderr
  n += 1 + 1 + 1;                       // log file, local listener, its spare
  n += 4;                               // socket lock, state lock, state file, limits file
  n += 3 * targets;                     // segment lock, segment while opened, limit_command pipe
  n += static_cast<std::uint64_t>(config.max_unregistered);
  if (config.cluster_mode()) {
    const auto brokers = static_cast<std::uint64_t>(config.cluster->brokers.size());
    n += 1 + 1;                         // cluster listener, its spare
    n += kMaxUnauthenticated;           // handshakes in progress
    n += 2 * brokers + 2;               // served channels, hellos, channel to the coordinator
  }
  n += 32;                              // epoll, eventfd, timers, signals, /proc reads
  return n;
}

Result<FileBudget> FitFileLimit(config::BrokerConfig& config, bool raise) {
#ifdef _WIN32
  // Windows has no descriptor limit to fit under: a process may hold about
  // 16 million handles, far above any max_clients. Nothing to raise or lower.
  (void)raise;
  FileBudget w;
  w.needed = static_cast<std::uint64_t>(config.max_clients) + FixedDescriptors(config);
  w.soft_before = w.soft = w.hard = UINT64_MAX;
  w.max_clients = config.max_clients;
  return w;
#else
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return Status(Errc::kConfig, std::string("cannot read the file limit (RLIMIT_NOFILE): ") +
                                     std::strerror(errno));
  }
  FileBudget b;
  const std::uint64_t fixed = FixedDescriptors(config);
  b.needed = static_cast<std::uint64_t>(config.max_clients) + fixed;
  b.soft_before = lim.rlim_cur == RLIM_INFINITY ? UINT64_MAX : lim.rlim_cur;
  b.hard = lim.rlim_max == RLIM_INFINITY ? UINT64_MAX : lim.rlim_max;
  b.soft = b.soft_before;
  if (raise && b.soft < b.needed) {
    // Only as far as needed: select()-based libraries break above 1024, and
    // an infinite limit makes some loops over "every descriptor" slow.
    rlimit want = lim;
    want.rlim_cur = static_cast<rlim_t>(std::min(b.needed, b.hard));
    if (::setrlimit(RLIMIT_NOFILE, &want) == 0) b.soft = want.rlim_cur;
  }
  const std::string limit_text =
      "the file limit (RLIMIT_NOFILE) is " + std::to_string(b.soft) +
      (b.soft != b.soft_before ? " (raised from " + std::to_string(b.soft_before) + ")"
                               : std::string()) +
      ", hard limit " + (b.hard == UINT64_MAX ? std::string("unlimited") : std::to_string(b.hard));
  if (b.soft <= fixed) {
    return Status(Errc::kConfig,
                  limit_text + ": too small for any client (the broker needs " +
                      std::to_string(fixed) + " descriptors besides one per client: "
                      "broker.max_unregistered = " + std::to_string(config.max_unregistered) +
                      ", its files, segments and listeners); raise it (ulimit -n, "
                      "LimitNOFILE= in the service unit) or lower broker.max_unregistered");
  }
  const std::uint64_t fits = b.soft - fixed;
  if (fits < static_cast<std::uint64_t>(config.max_clients)) {
    b.max_clients = static_cast<int>(fits);
    b.lowered = true;
    b.note = limit_text + ": broker.max_clients lowered from " +
             std::to_string(config.max_clients) + " to " + std::to_string(fits) + " (" +
             std::to_string(fixed) + " descriptors are kept for unregistered connections, "
             "files, segments and listeners); raise the limit (LimitNOFILE= in the service "
             "unit, or ulimit -n) to at least " + std::to_string(b.needed) +
             " or set broker.max_clients <= " + std::to_string(fits);
  } else {
    b.max_clients = config.max_clients;
    if (b.soft != b.soft_before) {
      b.note = limit_text + "; broker.max_clients " + std::to_string(config.max_clients) +
               " fits (" + std::to_string(b.needed) + " descriptors needed)";
    }
  }
  config.max_clients = b.max_clients;
  return b;
#endif
}

}  // namespace dsb::broker
