#include "common/limited_log.h"

#include <mutex>

namespace dsb {
namespace {

std::mutex& Mutex() {
  static std::mutex mu;
  return mu;
}

LogLimiter& Limiter() {
  // 5 lines per key per 30 s: the first lines of an event show at once; a
  // peer repeating it every 125 ms (a refused broker's renews) or in a tight
  // loop (a client's reports) adds one count line per 30 s.
  static LogLimiter limiter(LogLimiter::Options{5, std::chrono::seconds(30), 256});
  return limiter;
}

std::string Seconds(LogLimiter::Clock::duration d) {
  return fmt::format("{:.1f}", std::chrono::duration<double>(d).count());
}

}  // namespace

LogLimiter::Admission AdmitLimitedLine(std::string_view site, std::string_view peer) {
  std::lock_guard lock(Mutex());
  return Limiter().Admit(site, peer, LogLimiter::Clock::now());
}

std::string SuppressedSuffix(const LogLimiter::Admission& a) {
  if (!a.emit || a.suppressed == 0) return std::string();
  return fmt::format(" [{} similar line(s) suppressed over {} s]", a.suppressed, Seconds(a.over));
}

std::optional<LogLimiter::Clock::time_point> FlushLimitedLogs(bool all) {
  std::vector<LogLimiter::Summary> summaries;
  std::optional<LogLimiter::Clock::time_point> next;
  {
    std::lock_guard lock(Mutex());
    summaries = Limiter().Flush(LogLimiter::Clock::now(), all);
    next = Limiter().NextFlush();
  }
  for (const LogLimiter::Summary& s : summaries) {
    spdlog::warn("{} more '{}' line(s) ({}) suppressed over {} s", s.suppressed, s.site,
                 s.peer, Seconds(s.over));
  }
  return next;
}

std::uint64_t LimitedLogSuppressedTotal() {
  std::lock_guard lock(Mutex());
  return Limiter().suppressed_total();
}

void ResetLimitedLogForTesting() {
  std::lock_guard lock(Mutex());
  Limiter() = LogLimiter(Limiter().options());
}

}  // namespace dsb
