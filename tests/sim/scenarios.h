// Named scenarios of the lease simulation: every edge case listed at the end of
// DESIGN section 7, each paired with the protocol clause that guards it, and a
// random-configuration generator for seed sweeps.
#ifndef DSB_TESTS_SIM_SCENARIOS_H_
#define DSB_TESTS_SIM_SCENARIOS_H_

#include <cstdint>
#include <string>
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

// Named scenarios of the server model (limit discovery, close lag, other
// tools; DESIGN section 8). Each runs with the LimitPolicy's `ratchet` test
// switch on or off; `check` returns "" when the run shows what the scenario
// claims, or the name of the check that failed and the figures.
struct ServerOptions {
  bool ratchet = false;  // LimitPolicy's test switch
  bool verbose = false;
  bool hold_after_refusal = false;  // ServerSpec::hold_after_refusal
  Duration report_horizon{0};       // ServerSpec::report_horizon
  bool no_probation = false;        // ServerSpec::probation = 0 (the F2a switch)
};
struct ServerScenario {
  const char* name;
  const char* claim;
  SimStats (*run)(const ServerOptions& options);
  std::string (*check)(const SimStats& stats);
  // True if the scenario must FAIL its check with the ratchet switch on (it
  // shows that rule F2 is needed).
  bool ratchet_must_fail;
};
const std::vector<ServerScenario>& ServerScenarios();

// The checks every randomized run with the server model must pass: S against
// L - r at every event, no over-grant, S against the real cap after
// convergence (SimStats::real_cap_violations), the limit never below C minus
// the other tools' sessions. Returns "" or the failed check with the figures.
std::string CheckServerRun(const SimStats& stats);
// One line of a server-model run's figures (limit, refusals, convergence).
std::string Figures(const SimStats& stats);

// RandomConfig plus a server: a real cap C in [minimum, L], one of the safe
// release modes (no lag; confirmed close; cooldown >= lag), other tools on
// half the seeds, random backoff, think time and discovery window.
SimConfig RandomServerConfig(std::uint64_t seed, int brokers, RealTime run_for,
                             bool faults = true);

// A random cluster and workload for `seed`: brokers (2-20, or `brokers` if
// non-zero), weights, floors, drift within eps (often at the edge), network
// loss/duplication/delay/reordering, partitions, broker and coordinator crashes,
// revokes, shifting demand. `run_for` is the simulated duration.
SimConfig RandomConfig(std::uint64_t seed, int brokers, RealTime run_for, bool faults = true);

}  // namespace dsb::sim

#endif  // DSB_TESTS_SIM_SCENARIOS_H_
