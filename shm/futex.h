// Futex wait/wake on 32-bit words in shared memory (cross-process: never the
// PRIVATE variants). This is the only platform seam of the wait path; a
// Windows port puts WaitOnAddress-like code behind the same two functions.
#ifndef DSB_SHM_FUTEX_H_
#define DSB_SHM_FUTEX_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace dsb::shm {

// Sleeps while *word == expected, at most `timeout` (negative = forever).
// Returns on wake, on value change, on timeout or on a signal: callers re-check.
void FutexWait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
               std::chrono::nanoseconds timeout);

// Wakes up to `count` sleepers on `word`.
void FutexWake(std::atomic<std::uint32_t>* word, int count);

}  // namespace dsb::shm

#endif  // DSB_SHM_FUTEX_H_
