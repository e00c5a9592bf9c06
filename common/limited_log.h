// Rate-limited log lines through spdlog: the process-wide LogLimiter
// (common/log_limit.h) for every warning a peer can trigger repeatedly.
//
//   LogLimited(spdlog::level::warn, "malformed local request", peer_key,
//              "local peer {}: malformed request: {}", who, why);
//
// `site` names the event (a constant phrase; it is also what the summary line
// quotes); `peer` tells apart who triggers it (uid/pid, address, broker id:
// escape it if a peer chose it). At most 5 lines per (site, peer) per 30 s go
// out; the next one that does carries " [N similar line(s) suppressed over
// S s]", and FlushLimitedLogs() writes the count of a key that fell silent.
// At most 256 keys (then peers share one key per site).
//
// Thread rule: thread-safe (one mutex around the limiter). The clock is read
// here, not in LogLimiter.
#ifndef DSB_COMMON_LIMITED_LOG_H_
#define DSB_COMMON_LIMITED_LOG_H_

#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/log_limit.h"

namespace dsb {

// The process-wide limiter's decision for one line of (site, peer) now.
LogLimiter::Admission AdmitLimitedLine(std::string_view site, std::string_view peer);

// " [N similar line(s) suppressed over S s]" for an admission that reports a
// count; "" otherwise.
std::string SuppressedSuffix(const LogLimiter::Admission& a);

template <typename... Args>
void LogLimited(spdlog::level::level_enum level, std::string_view site, std::string_view peer,
                fmt::format_string<Args...> format, Args&&... args) {
  const LogLimiter::Admission a = AdmitLimitedLine(site, peer);
  if (!a.emit) return;
  spdlog::log(level, "{}{}", fmt::format(format, std::forward<Args>(args)...),
              SuppressedSuffix(a));
}

// Logs (warn) one summary line per key whose interval ended with suppressed
// lines: "N more '<site>' line(s) (<peer>) suppressed over S s".
// `all`: every pending count (at shutdown). Returns when to call it next
// (nullopt: nothing pending). Call it about once a second from a timer.
std::optional<LogLimiter::Clock::time_point> FlushLimitedLogs(bool all = false);

// Lines suppressed so far in this process.
std::uint64_t LimitedLogSuppressedTotal();

// Tests only: forgets every key and count, so one test's lines do not use up
// the next one's budget in the same process.
void ResetLimitedLogForTesting();

}  // namespace dsb

#endif  // DSB_COMMON_LIMITED_LOG_H_
