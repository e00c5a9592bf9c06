// shm::TicksToNs, the QueryPerformanceCounter -> ns conversion behind
// MonotonicNs on Windows: a pure function, so it is checked on every OS,
// with the frequencies Windows reports (10 MHz on current Windows and Wine,
// the TSC's ~3 GHz on older systems) and tick counts of long uptimes.
#include "shm/monotonic_clock.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>

namespace dsb::shm {
namespace {

constexpr std::int64_t k10MHz = 10'000'000;
constexpr std::int64_t k3GHz = 3'000'000'000;
constexpr std::int64_t kNsPerS = 1'000'000'000;

TEST(TicksToNs, IsExactAtWholeSeconds) {
  for (std::int64_t freq : {k10MHz, k3GHz, std::int64_t{1}, std::int64_t{3'579'545}}) {
    for (std::int64_t s : {std::int64_t{0}, std::int64_t{1}, std::int64_t{86'400},
                           std::int64_t{90} * 365 * 86'400}) {
      EXPECT_EQ(TicksToNs(s * freq, freq), s * kNsPerS) << "freq " << freq << ", " << s << " s";
    }
  }
}

TEST(TicksToNs, ScalesOneTickAndRoundsToNearest) {
  EXPECT_EQ(TicksToNs(1, k10MHz), 100);
  EXPECT_EQ(TicksToNs(k10MHz + 1, k10MHz), kNsPerS + 100);
  EXPECT_EQ(TicksToNs(1, k3GHz), 0);  // 0.33 ns
  EXPECT_EQ(TicksToNs(2, k3GHz), 1);  // 0.67 ns
  EXPECT_EQ(TicksToNs(3, k3GHz), 1);
}

TEST(TicksToNs, DoesNotOverflowAtLongUptimes) {
  // A naive ticks * 1e9 overflows int64 after 922 s at 10 MHz and 3 s at
  // 3 GHz; 90 years of uptime (near where a 3 GHz tick count itself would
  // leave int64) must still come out right.
  const std::int64_t century_s = std::int64_t{90} * 365 * 86'400;
  for (std::int64_t freq : {k10MHz, k3GHz}) {
    const std::int64_t ticks = century_s * freq + freq / 2;
    const std::int64_t ns = TicksToNs(ticks, freq);
    EXPECT_EQ(ns, century_s * kNsPerS + kNsPerS / 2) << "freq " << freq;
    EXPECT_GT(ns, 0);
  }
  // The largest seconds value that fits in int64 nanoseconds (~292 years).
  const std::int64_t max_s = std::numeric_limits<std::int64_t>::max() / kNsPerS - 1;
  EXPECT_EQ(TicksToNs(max_s * k10MHz + (k10MHz - 1), k10MHz), max_s * kNsPerS + kNsPerS - 100);
}

TEST(TicksToNs, IsMonotonicAcrossSecondBoundariesAndRandomSteps) {
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  std::mt19937_64 rng(seed);
  for (std::int64_t freq : {k10MHz, k3GHz, std::int64_t{3'579'545}}) {
    // Every tick around a few second boundaries, one of them days into uptime.
    for (std::int64_t s : {std::int64_t{1}, std::int64_t{2}, std::int64_t{5'000'000}}) {
      std::int64_t prev = TicksToNs(s * freq - 1000, freq);
      for (std::int64_t t = s * freq - 999; t <= s * freq + 1000; ++t) {
        const std::int64_t now = TicksToNs(t, freq);
        ASSERT_GE(now, prev) << "freq " << freq << " tick " << t;
        ASSERT_LE(now - prev, kNsPerS / freq + 1) << "freq " << freq << " tick " << t;
        prev = now;
      }
    }
    // Random increasing readings over decades of uptime (bounded count).
    std::int64_t t = 0;
    std::int64_t prev = 0;
    for (int i = 0; i < 100'000; ++i) {
      t += static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(freq * 20'000));
      const std::int64_t now = TicksToNs(t, freq);
      ASSERT_GE(now, prev) << "freq " << freq << " tick " << t << " seed " << seed;
      prev = now;
    }
  }
}

}  // namespace
}  // namespace dsb::shm
