#include "broker/lease/fair_share.h"

#include <algorithm>

#include "common/check.h"

namespace dsb::lease {

std::vector<std::uint32_t> FairShares(std::uint32_t capacity,
                                      std::span<const std::uint32_t> demands,
                                      std::span<const std::uint32_t> weights) {
  DSB_CHECK(demands.size() == weights.size(), "%zu demands, %zu weights", demands.size(),
            weights.size());
  DSB_CHECK(demands.size() < 65536, "%zu demands", demands.size());
  const std::size_t n = demands.size();
  std::vector<std::uint32_t> alloc(n, 0);
  std::vector<std::size_t> open;
  for (std::size_t i = 0; i < n; ++i) {
    DSB_CHECK(weights[i] >= 1 && weights[i] <= kMaxWeight, "weight[%zu] = %u", i, weights[i]);
    if (demands[i] > 0) open.push_back(i);
  }
  std::uint64_t remaining = capacity;
  // Water-filling. Every entry whose residual demand fits under its weighted
  // share of what remains is satisfied; removing them can only raise the level
  // of the others, so repeat until none fits.
  while (remaining > 0 && !open.empty()) {
    std::uint64_t wsum = 0;
    for (std::size_t i : open) wsum += weights[i];
    std::vector<std::size_t> still_open;
    std::uint64_t used = 0;
    for (std::size_t i : open) {
      const std::uint64_t residual = demands[i] - alloc[i];
      if (residual * wsum <= remaining * weights[i]) {
        alloc[i] = demands[i];
        used += residual;
      } else {
        still_open.push_back(i);
      }
    }
    if (used > 0) {
      remaining -= used;
      open = std::move(still_open);
      continue;
    }
    // Nobody fits: everyone open gets floor(remaining * w / wsum); each of them
    // has residual > that share, so each can take one more unit below.
    std::uint64_t given = 0;
    for (std::size_t i : open) {
      const std::uint64_t share = remaining * weights[i] / wsum;
      alloc[i] += static_cast<std::uint32_t>(share);
      given += share;
    }
    remaining -= given;
    DSB_CHECK(remaining < open.size(), "remainder %llu, %zu open",
              static_cast<unsigned long long>(remaining), open.size());
    // Hand out the last units one each, lowest (a + 1) / w first, ties by index.
    std::stable_sort(open.begin(), open.end(), [&](std::size_t x, std::size_t y) {
      return (std::uint64_t{alloc[x]} + 1) * weights[y] <
             (std::uint64_t{alloc[y]} + 1) * weights[x];
    });
    for (std::size_t k = 0; k < remaining; ++k) ++alloc[open[k]];
    remaining = 0;
  }
  return alloc;
}

std::vector<std::uint32_t> FairShares(std::uint32_t capacity,
                                      std::span<const std::uint32_t> demands) {
  std::vector<std::uint32_t> ones(demands.size(), 1);
  return FairShares(capacity, demands, ones);
}

std::uint32_t MaxGrant(std::uint32_t pool, std::uint64_t owed_by_others) {
  if (owed_by_others >= pool) return 0;
  return static_cast<std::uint32_t>(pool - owed_by_others);
}

}  // namespace dsb::lease
