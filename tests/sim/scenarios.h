// Named scenarios of the lease simulation: every edge case listed at the end of
// DESIGN section 7, each paired with the protocol clause that guards it, and a
// random-configuration generator for seed sweeps.
#ifndef DSB_TESTS_SIM_SCENARIOS_H_
#define DSB_TESTS_SIM_SCENARIOS_H_

#include <cstdint>
#include <vector>

#include "tests/sim/sim.h"

namespace dsb::sim {

struct Scenario {
  const char* name;    // the edge case
  const char* clause;  // the rule that guards it
  // Turns the guarding clause off.
  void (*break_clause)(lease::ProtocolSwitches&);
  // Runs the scenario with `switches` and returns its statistics.
  SimStats (*run)(const lease::ProtocolSwitches& switches, bool verbose);
};

// Every targeted scenario.
const std::vector<Scenario>& Scenarios();

// A random cluster and workload for `seed`: brokers (2-20, or `brokers` if
// non-zero), weights, floors, drift within eps (often at the edge), network
// loss/duplication/delay/reordering, partitions, broker and coordinator crashes,
// revokes, shifting demand. `run_for` is the simulated duration.
SimConfig RandomConfig(std::uint64_t seed, int brokers, RealTime run_for, bool faults = true);

}  // namespace dsb::sim

#endif  // DSB_TESTS_SIM_SCENARIOS_H_
