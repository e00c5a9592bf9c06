// The slot table's clock: monotonic, system-wide (every process of the
// machine reads the same value at the same instant), in nanoseconds. Cooling
// deadlines, the lease deadline (lease_deadline_ns, invariant 4 of
// segment_layout.h), the quarantine record and the queue-stall stamp in the
// segment are all on this clock, so any process can judge what another wrote.
//
// POSIX: CLOCK_MONOTONIC (a vDSO call on Linux x86-64, not a system call).
// Windows: QueryPerformanceCounter, which Windows documents as system-wide
// and monotonic (a user-mode read on invariant-TSC hardware), scaled to ns
// with the same split multiply and rounding as winpthreads' clock_gettime
// (CLOCK_MONOTONIC), so MinGW's std::chrono::steady_clock (which the broker
// uses for its deadlines) reads the same value.
#ifndef DSB_SHM_MONOTONIC_CLOCK_H_
#define DSB_SHM_MONOTONIC_CLOCK_H_

#include <cstdint>

#ifndef _WIN32
#include <time.h>
#endif

namespace dsb::shm {

// A QueryPerformanceCounter reading `ticks` at `freq` ticks per second, in
// nanoseconds: whole seconds first, then the remainder rounded to nearest,
// the same split multiply and rounding as winpthreads' clock_gettime
// (CLOCK_MONOTONIC). ticks * 1e9 would overflow int64 after ~15 minutes at
// 10 MHz; (ticks % freq) * 1e9 stays below 2^63 for any frequency under
// ~9.2 GHz. Exact at whole seconds; monotonic in `ticks`.
// REQUIRES: ticks >= 0, 0 < freq < 9'000'000'000. Pure (tested on every OS).
constexpr std::int64_t TicksToNs(std::int64_t ticks, std::int64_t freq) noexcept {
  const std::int64_t sec = ticks / freq;
  const std::int64_t ns = ((ticks % freq) * 1000000000 + (freq >> 1)) / freq;
  return sec * 1000000000 + ns;
}

#ifdef _WIN32
// Out of line (shm/monotonic_clock_win.cc) so that this header does not pull
// <windows.h> (and its min/max macros) into every file of the project.
std::int64_t MonotonicNs() noexcept;
#else
inline std::int64_t MonotonicNs() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}
#endif

}  // namespace dsb::shm

#endif  // DSB_SHM_MONOTONIC_CLOCK_H_
