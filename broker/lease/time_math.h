// Drift allowance arithmetic shared by the ledger and the agent (internal).
#ifndef DSB_BROKER_LEASE_TIME_MATH_H_
#define DSB_BROKER_LEASE_TIME_MATH_H_

#include <cmath>

#include "broker/lease/messages.h"

namespace dsb::lease {

namespace internal {
// d * eps as a whole number of nanoseconds, rounded up (down if !up), where a
// product within 1e-6 ns of an integer counts as that integer (so 20 s * 1e-3
// is exactly 20 ms despite binary floating point).
inline Duration::rep ScaledPart(Duration d, double eps, bool up) {
  const double x = static_cast<double>(d.count()) * eps;
  const double nearest = std::round(x);
  if (std::fabs(x - nearest) < 1e-6) return static_cast<Duration::rep>(nearest);
  return static_cast<Duration::rep>(up ? std::ceil(x) : std::floor(x));
}
}  // namespace internal

// d * (1 + eps), rounded up: a local wait at least this long covers d of real
// time on a clock running up to eps fast.
inline Duration StretchByEps(Duration d, double eps) {
  return d + Duration(internal::ScaledPart(d, eps, /*up=*/true));
}

// d * (1 - eps), rounded down: a local wait this long covers at most d of real
// time on a clock running up to eps slow.
inline Duration ShrinkByEps(Duration d, double eps) {
  return d - Duration(internal::ScaledPart(d, eps, /*up=*/true));
}

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_TIME_MATH_H_
