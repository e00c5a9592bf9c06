// Integer (weighted) max-min fair shares, and the C1 bound on a single grant.
//
// Pure functions; no state, no clock. Used by the ledger (DESIGN section 7,
// "Sharing") to decide how much of a target's pool each broker should get.
#ifndef DSB_BROKER_LEASE_FAIR_SHARE_H_
#define DSB_BROKER_LEASE_FAIR_SHARE_H_

#include <cstdint>
#include <span>
#include <vector>

namespace dsb::lease {

// The largest weight FairShares accepts (keeps every product in 64 bits).
inline constexpr std::uint32_t kMaxWeight = 65535;

// Splits `capacity` among demands, max-min fair with weights: returns a[i] with
//   a[i] <= demands[i], sum(a) <= capacity, sum(a) == min(capacity, sum(demands)),
// and max-min fair up to integer rounding: for every i with a[i] < demands[i]
// and every j, (a[j] - 1) / w[j] < (a[i] + 1) / w[i].
// Integer rounding: after the fractional level is fixed, each remaining unit
// goes to the unsatisfied entry with the smallest (a[i] + 1) / w[i], ties to the
// lowest index. The result depends only on the inputs (deterministic).
// REQUIRES: weights.size() == demands.size(); 1 <= weights[i] <= kMaxWeight;
//           demands.size() < 65536.
std::vector<std::uint32_t> FairShares(std::uint32_t capacity,
                                      std::span<const std::uint32_t> demands,
                                      std::span<const std::uint32_t> weights);

// Same with every weight 1.
std::vector<std::uint32_t> FairShares(std::uint32_t capacity,
                                      std::span<const std::uint32_t> demands);

// C1: the most one broker may be granted, `pool - owed_by_others`, or 0 when
// the others are owed the whole pool or more. Capacity moves from one broker to
// another only as the other's owed falls.
std::uint32_t MaxGrant(std::uint32_t pool, std::uint64_t owed_by_others);

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_FAIR_SHARE_H_
