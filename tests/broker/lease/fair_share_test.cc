#include "broker/lease/fair_share.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace dsb::lease {
namespace {

using V = std::vector<std::uint32_t>;

struct Case {
  const char* name;
  std::uint32_t capacity;
  V demands;
  V weights;  // empty = all 1
  V want;
};

TEST(FairShare, MatchesTable) {
  const Case cases[] = {
      {"equal split", 10, {5, 5}, {}, {5, 5}},
      {"small demand satisfied, rest to the big one", 10, {2, 20}, {}, {2, 8}},
      {"remainder goes to lowest index", 10, {20, 20, 20}, {}, {4, 3, 3}},
      {"no capacity", 0, {3, 3}, {}, {0, 0}},
      {"capacity above demand", 100, {3, 4}, {}, {3, 4}},
      {"zero demand gets nothing", 10, {0, 20}, {}, {0, 10}},
      {"no brokers", 10, {}, {}, {}},
      {"weights split proportionally", 12, {20, 20}, {1, 2}, {4, 8}},
      {"weights with a satisfied entry", 12, {2, 20, 20}, {1, 1, 2}, {2, 3, 7}},
      {"heavy weight capped by its demand", 12, {20, 3}, {1, 5}, {9, 3}},
      {"one unit, tie to lowest index", 1, {5, 5, 5}, {}, {1, 0, 0}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const V got = c.weights.empty() ? FairShares(c.capacity, c.demands)
                                    : FairShares(c.capacity, c.demands, c.weights);
    EXPECT_EQ(got, c.want);
  }
}

// Properties on random inputs: bounded by demand, sums to min(capacity, total
// demand), and max-min fair up to one unit.
TEST(FairShare, RandomInputsAreBoundedCompleteAndMaxMinFair) {
  const std::uint64_t seed = 20240601;
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 20000; ++iter) {
    const std::size_t n = 1 + rng() % 12;
    V d(n), w(n);
    for (std::size_t i = 0; i < n; ++i) {
      d[i] = static_cast<std::uint32_t>(rng() % 40);
      w[i] = static_cast<std::uint32_t>(1 + rng() % 5);
    }
    const auto cap = static_cast<std::uint32_t>(rng() % 150);
    const V a = FairShares(cap, d, w);
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(iter));
    ASSERT_EQ(a.size(), n);
    const std::uint64_t total_d = std::accumulate(d.begin(), d.end(), std::uint64_t{0});
    const std::uint64_t total_a = std::accumulate(a.begin(), a.end(), std::uint64_t{0});
    ASSERT_EQ(total_a, std::min<std::uint64_t>(cap, total_d));
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_LE(a[i], d[i]);
      if (a[i] == d[i]) continue;
      // i is unsatisfied: nobody's weighted share exceeds i's by a unit on each
      // side (a[j] - 1) / w[j] < (a[i] + 1) / w[i]; i.e. max-min fair up to
      // integer rounding.
      for (std::size_t j = 0; j < n; ++j) {
        if (a[j] == 0) continue;
        ASSERT_LT((std::uint64_t{a[j]} - 1) * w[i], (std::uint64_t{a[i]} + 1) * w[j])
            << "i=" << i << " j=" << j;
      }
    }
  }
}

TEST(FairShare, IsDeterministic) {
  const V d = {7, 3, 9, 9, 1};
  const V w = {2, 1, 3, 3, 1};
  EXPECT_EQ(FairShares(17, d, w), FairShares(17, d, w));
}

TEST(FairShare, MaxGrantIsPoolMinusWhatOthersAreOwed) {
  struct {
    std::uint32_t pool;
    std::uint64_t others;
    std::uint32_t want;
  } cases[] = {{10, 0, 10}, {10, 4, 6}, {10, 10, 0}, {10, 25, 0}, {0, 0, 0}};
  for (const auto& c : cases) EXPECT_EQ(MaxGrant(c.pool, c.others), c.want);
}

}  // namespace
}  // namespace dsb::lease
