// Waiting for a condition that has no event of its own (a counter inside
// another process: a server's STATS, a broker's status).
#ifndef DSB_TESTS_SUPPORT_WAIT_H_
#define DSB_TESTS_SUPPORT_WAIT_H_

#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <thread>

namespace dsb::testing {

// Polls `pred` until it holds or `timeout` passes; returns the last value of
// `pred`. The 5 ms poll interval only bounds CPU use while polling another
// process's state; where the product offers an event (a log line, a socket
// closing, a blocked call returning), tests wait on that instead.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Sleeps until CLOCK_MONOTONIC reads `deadline_ns` (the clock of lease
// deadlines in the slot table): one absolute timer, not a polling loop. The
// kernel may wake a little late, never early.
inline void SleepUntilMonotonicNs(std::int64_t deadline_ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000);
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_WAIT_H_
