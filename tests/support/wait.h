// Waiting for a condition that has no event of its own (a counter inside
// another process: a server's STATS, a broker's status).
#ifndef DSB_TESTS_SUPPORT_WAIT_H_
#define DSB_TESTS_SUPPORT_WAIT_H_

#include <chrono>
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

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_WAIT_H_
