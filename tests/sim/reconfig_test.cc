// The reconfiguration rules R0-R5 in the deterministic simulation
// (tests/sim/reconfig.h, docs/simulation.md).
#include "tests/sim/reconfig.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace dsb::sim::reconfig {
namespace {

std::uint64_t EnvOr(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

class ReconfigCase : public ::testing::TestWithParam<std::size_t> {};

// Every named scenario keeps S with every switch on...
TEST_P(ReconfigCase, KeepsSWithEveryRule) {
  const ReconfigScenario& s = ReconfigScenarios()[GetParam()];
  const ReconfigStats st = s.run(ReconfigSwitches{}, false);
  EXPECT_EQ(st.s_violations, 0u) << st.first_violation;
  EXPECT_GT(st.events, 1000u);
}

// ...and breaks it with its switch off: the clause is needed.
TEST_P(ReconfigCase, BreaksSWithoutItsRule) {
  const ReconfigScenario& s = ReconfigScenarios()[GetParam()];
  const ReconfigSwitchInfo* sw = FindReconfigSwitch(s.switch_name);
  ASSERT_NE(sw, nullptr) << s.switch_name;
  ReconfigSwitches off;
  sw->turn_off(off);
  ASSERT_NE(off, ReconfigSwitches{});
  const ReconfigStats st = s.run(off, false);
  EXPECT_GT(st.s_violations, 0u) << s.name << " kept S without " << s.switch_name;
  std::printf("%s without %s: %s\n", s.name, s.switch_name, st.first_violation.c_str());
}

INSTANTIATE_TEST_SUITE_P(R, ReconfigCase,
                         ::testing::Range<std::size_t>(0, ReconfigScenarios().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return std::string(ReconfigScenarios()[info.param].name);
                         });

// Random operator events catch every R switch: a short run per switch, up to
// the first seed that breaks S with the switch off and keeps it with every
// switch on (docs/simulation.md has the first failing seed of each).
class ReconfigCatch : public ::testing::TestWithParam<std::size_t> {};

TEST_P(ReconfigCatch, RandomSeedsCatchTheSwitch) {
  const ReconfigSwitchInfo& sw = ReconfigSwitchList()[GetParam()];
  const std::uint64_t seeds = EnvOr("DSB_RECONFIG_CATCH_SEEDS", 600);
  const CatchRow row = CatchReconfigSwitch(sw, 1, seeds, Sec(60), /*stop_at_first=*/true);
  EXPECT_GT(row.s_broken, 0u) << sw.name << ": no seed of " << seeds << " broke S";
  std::printf("%s: caught by seed %llu (%llu seeds, %llu events, %.1f s)\n", sw.name,
              static_cast<unsigned long long>(row.first_failing),
              static_cast<unsigned long long>(row.seeds_run),
              static_cast<unsigned long long>(row.events), row.wall_seconds);
}

INSTANTIATE_TEST_SUITE_P(R, ReconfigCatch,
                         ::testing::Range<std::size_t>(0, ReconfigSwitchList().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           std::string n = ReconfigSwitchList()[info.param].name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Every switch on: random seeds keep S, except the seeds of finding F1
// (docs/simulation.md, "Findings"): a clone accepted once its original, cut
// off from the coordinator but still using its acceptance (R1), is silent.
// Any OTHER failing seed fails the test (replay: dsb-sim --reconfig
// --first-seed N --seeds 1 --run-for 60 --verbose).
TEST(ReconfigRandom, EverySwitchOnKeepsSExceptKnownFindings) {
  const std::uint64_t first = EnvOr("DSB_RECONFIG_FIRST_SEED", 1);
  const std::uint64_t seeds = EnvOr("DSB_RECONFIG_SEEDS", 200);
  const std::vector<std::uint64_t> f1 = {45, 170};
  std::uint64_t events = 0, ops = 0, known = 0;
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    ReconfigSim sim(RandomReconfig(seed, Sec(60)));
    sim.Run();
    events += sim.stats().events;
    ops += sim.stats().reconfig_events;
    if (sim.stats().s_violations == 0) continue;
    if (std::find(f1.begin(), f1.end(), seed) != f1.end()) {
      ++known;
      continue;
    }
    ADD_FAILURE() << sim.stats().first_violation;
  }
  std::printf("%llu seeds, %llu events, %llu operator events; %llu known F1 seed(s)\n",
              static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(events),
              static_cast<unsigned long long>(ops), static_cast<unsigned long long>(known));
}

}  // namespace
}  // namespace dsb::sim::reconfig
