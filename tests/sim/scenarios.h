// Named scenarios of the lease simulation: every edge case listed at the end of
// DESIGN section 7, each paired with the protocol clause that guards it, and a
// random-configuration generator for seed sweeps.
#ifndef DSB_TESTS_SIM_SCENARIOS_H_
#define DSB_TESTS_SIM_SCENARIOS_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/sim/sim.h"

namespace dsb::sim {

// How a targeted scenario runs: trace, and the ledger's home (the embedded
// coordinator, or etcd: sim.h's etcd mode).
struct RunOptions {
  bool verbose = false;
  bool etcd = false;
};

// In etcd mode (issue 13) a scenario runs with the same script; the
// coordinator's faults become the store's (sim.h). Whether its clause still
// guards S there:
enum class EtcdFit {
  kBreaks,        // the same edge case; with the clause off S breaks in etcd mode too
  kKeepsOnly,     // runs and must keep S, but the clause is not what guards it in
                  // etcd mode (etcd_note says why); its switch is still shown by
                  // another scenario or by random seeds
  kEmbeddedOnly,  // does not apply to etcd mode (etcd_note says why)
  kEtcdOnly,      // an etcd-mode edge case (no coordinator to script)
};

struct Scenario {
  const char* name;    // the edge case
  const char* clause;  // the rule that guards it
  // Turns the guarding clause off.
  void (*break_clause)(SimSwitches&);
  // Runs the scenario with `switches` and returns its statistics.
  SimStats (*run)(const SimSwitches& switches, const RunOptions& options);
  // A control case: it keeps S even with the clause off (it shows the
  // scenario next to it fails for the reason it names, not by construction).
  bool control = false;
  EtcdFit etcd = EtcdFit::kBreaks;
  const char* etcd_note = "";  // how the scenario maps to etcd mode
};

// Every targeted scenario.
const std::vector<Scenario>& Scenarios();

// An epoch that goes backwards: broker a's wall clock is stepped back 60 s and
// a restarts; with wall-clock epochs (the product before R0) its new epoch is
// older than its previous one, every request of the new instance is ignored
// as stale (yet moves the silence timer, so the old epoch's owed never falls)
// and a never gets a share again. A liveness check, not S: a must hold a
// lease again within (D + H)(1 + eps) + D of the restart. Passes with counter
// epochs (R0); `failed` is "" or the check and figures.
struct EpochResult {
  SimStats stats;
  std::string failed;
  std::string figures;
};
EpochResult EpochBackwardsAfterRestart(EpochSource source, bool verbose);

// Every switch the simulation can turn off: the protocol's clauses
// (broker/lease/switches.h) and the broker glue (GlueSwitches).
struct SwitchInfo {
  const char* name;    // as on dsb-sim's command line (--break NAME)
  const char* clause;  // the rule it turns off
  void (*turn_off)(SimSwitches&);
  bool embedded = true;  // it changes the embedded mode (false: etcd mode only)
  bool etcd = true;      // random etcd-mode seeds must catch it
};
const std::vector<SwitchInfo>& AllSwitches();
// The switch named `name`, or nullptr.
const SwitchInfo* FindSwitch(const std::string& name);

// One line of the catch table: random seeds [first, first + seeds) run with
// one switch off (MixedConfig, `run_for` simulated seconds each).
// With stop_at_first the sweep ends at the first seed that breaks S.
struct CatchRow {
  std::string name;
  std::uint64_t seeds_run = 0;
  std::uint64_t s_broken = 0;      // seeds that broke S
  std::uint64_t first_failing = 0;  // 0 if none
  std::uint64_t over_granted = 0;  // seeds whose valid leases exceeded the pool
  std::uint64_t events = 0;
  double wall_seconds = 0;
};
// etcd: EtcdMixedConfig instead of MixedConfig.
CatchRow CatchSwitch(const SwitchInfo& sw, std::uint64_t first, std::uint64_t seeds,
                     RealTime run_for, bool stop_at_first, bool etcd = false);

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

// A random configuration built to break S quickly when a clause is off:
// RandomConfig's faults several times as often, 2-4 brokers with demand above
// a small pool, adversarial clients on most seeds, every clock at its drift
// edge (eps = 1% on half the seeds), brokers renewing every 20-200 ms on half.
SimConfig HuntConfig(std::uint64_t seed, RealTime run_for);
// HuntConfig narrowed to the drift edges: 2-3 brokers at the edge of eps = 1%
// (brokers slow, the coordinator fast), one renewing every 20 ms, the others
// falling silent every few seconds (stopped, cut off one way, degraded links),
// adversarial clients, D = 3 s.
SimConfig EdgeConfig(std::uint64_t seed, RealTime run_for);
// RandomConfig (random broker count) for odd seeds, HuntConfig for seeds
// divisible by 4, EdgeConfig for the rest: what the sweeps and the catch
// table run.
SimConfig MixedConfig(std::uint64_t seed, RealTime run_for);
// MixedConfig in etcd mode: the coordinator's crashes and stops become the
// store's leader changes (a deposed leader answering keepalives up to 1 s on
// a third of them) and quorum losses; on a quarter of the seeds the store is
// wiped now and then; members' clocks at random drifts within eps, at the
// edge on edge seeds; store calls time out after D/12 and a renew is
// abandoned after D/3, as broker/etcd/etcd_ledger.h does.
SimConfig EtcdMixedConfig(std::uint64_t seed, RealTime run_for);

}  // namespace dsb::sim

#endif  // DSB_TESTS_SIM_SCENARIOS_H_
