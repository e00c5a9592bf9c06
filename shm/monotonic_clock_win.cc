// shm::MonotonicNs on Windows: QueryPerformanceCounter (see monotonic_clock.h).
#include "shm/monotonic_clock.h"

#include <windows.h>

namespace dsb::shm {

namespace {
std::int64_t PerformanceFrequency() noexcept {
  // Fixed at boot (Windows documents it so): read once per process.
  static const std::int64_t freq = [] {
    LARGE_INTEGER f;
    ::QueryPerformanceFrequency(&f);
    return static_cast<std::int64_t>(f.QuadPart);
  }();
  return freq;
}
}  // namespace

std::int64_t MonotonicNs() noexcept {
  LARGE_INTEGER c;
  ::QueryPerformanceCounter(&c);
  return TicksToNs(static_cast<std::int64_t>(c.QuadPart), PerformanceFrequency());
}

}  // namespace dsb::shm
