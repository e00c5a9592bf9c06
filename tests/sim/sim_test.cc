#include "tests/sim/sim.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/sim/scenarios.h"

namespace dsb::sim {
namespace {

std::uint64_t EnvOr(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

class EdgeCase : public ::testing::TestWithParam<std::size_t> {};

// Every edge case of DESIGN section 7 keeps S (and never over-grants) with
// every clause on.
TEST_P(EdgeCase, KeepsSWithEveryClause) {
  const Scenario& s = Scenarios()[GetParam()];
  const SimStats st = s.run(lease::ProtocolSwitches{}, false);
  EXPECT_EQ(st.s_violations, 0u) << st.first_violation;
  EXPECT_EQ(st.max_over_grant, 0u);
  EXPECT_GT(st.events, 100u);
}

// ...and breaks S with the clause that guards it turned off: the clause matters.
TEST_P(EdgeCase, BreaksSWithoutItsClause) {
  const Scenario& s = Scenarios()[GetParam()];
  lease::ProtocolSwitches off;
  s.break_clause(off);
  ASSERT_NE(off, lease::ProtocolSwitches{});
  const SimStats st = s.run(off, false);
  EXPECT_GT(st.s_violations, 0u) << s.name
                                 << " did not detect a violation with clause off: " << s.clause;
  std::printf("%s without \"%s\": %s\n", s.name, s.clause, st.first_violation.c_str());
}

INSTANTIATE_TEST_SUITE_P(Lease, EdgeCase, ::testing::Range<std::size_t>(0, Scenarios().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return std::string(Scenarios()[info.param].name);
                         });

// Random seeds: every seed must keep S and never over-grant. A failing seed is
// printed with the command that replays it. DSB_SIM_SEEDS / DSB_SIM_FIRST_SEED
// override the sweep.
TEST(SimRandom, ThousandsOfSeedsKeepSAndNeverOverGrant) {
  const std::uint64_t seeds = EnvOr("DSB_SIM_SEEDS", 2000);
  const std::uint64_t first = EnvOr("DSB_SIM_FIRST_SEED", 1);
  const RealTime run_for = Sec(20);
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t events = 0;
  double util = 0;
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    Simulation sim(RandomConfig(seed, 0, run_for));
    sim.Run();
    const SimStats& st = sim.stats();
    events += st.events;
    util += st.utilization;
    ASSERT_EQ(st.s_violations, 0u) << st.first_violation << "\nreplay: dsb-sim --first-seed "
                                   << seed << " --seeds 1 --run-for 20 --verbose";
    ASSERT_EQ(st.max_over_grant, 0u)
        << "seed " << seed << " over-granted; replay: dsb-sim --first-seed " << seed
        << " --seeds 1 --run-for 20 --verbose";
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%llu seeds (first %llu), %llu events, mean utilization %.3f, %.0f seeds/s\n",
              static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(first),
              static_cast<unsigned long long>(events), util / static_cast<double>(seeds),
              static_cast<double>(seeds) / secs);
}

TEST(SimRandom, SameSeedReplaysExactly) {
  for (std::uint64_t seed : {7ull, 12345ull}) {
    Simulation a(RandomConfig(seed, 0, Sec(20)));
    Simulation b(RandomConfig(seed, 0, Sec(20)));
    a.Run();
    b.Run();
    EXPECT_EQ(a.stats().events, b.stats().events);
    EXPECT_EQ(a.stats().messages, b.stats().messages);
    EXPECT_EQ(a.stats().max_slots_used, b.stats().max_slots_used);
    EXPECT_DOUBLE_EQ(a.stats().utilization, b.stats().utilization);
  }
}

// Without faults, when demand exceeds the pool, held slots stay near the pool.
TEST(SimRandom, FaultFreeSaturatedUtilizationIsHigh) {
  double sat = 0, weight = 0;
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    Simulation sim(RandomConfig(seed, 0, Sec(60), /*faults=*/false));
    sim.Run();
    const SimStats& st = sim.stats();
    ASSERT_EQ(st.s_violations, 0u) << st.first_violation;
    sat += st.saturated_utilization * st.saturated_seconds;
    weight += st.saturated_seconds;
  }
  ASSERT_GT(weight, 0);
  std::printf("fault-free saturated utilization %.3f over %.0f s\n", sat / weight, weight);
  EXPECT_GT(sat / weight, 0.80);
}

}  // namespace
}  // namespace dsb::sim
