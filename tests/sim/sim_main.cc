// dsb-sim: long runs of the deterministic lease simulation.
//
//   dsb-sim --seeds 10000 --first-seed 1 [--brokers K] [--run-for 30] [--no-faults]
//   dsb-sim --first-seed 4242 --seeds 1 --verbose      # replay one seed with a trace
//   dsb-sim --scenarios                                # the named edge cases, clauses on/off
//   dsb-sim --seeds 1000 --break c1                    # random seeds with one clause off
//   dsb-sim --catch-table [--seeds N] [--first-seed F] [--break NAME]
//                                                      # every switch off in turn: how many
//                                                      # of N random seeds break S (and the
//                                                      # first failing seed, to replay)
//   dsb-sim --epoch-scenario [--wall-clock-epochs]     # epoch going backwards (R0)
//   dsb-sim --server-scenarios [--scenario NAME] [--ratchet] [--verbose]
//                                                      # the server model's named scenarios
//   dsb-sim --server --seeds 1000                      # random seeds with a server model: a
//                                                      # real cap below L, close lag, other tools
//   dsb-sim --reconfig-scenarios [--verbose]           # R0-R5 named scenarios, switch on/off
//   dsb-sim --reconfig --seeds 1000 [--break r3-step-down]
//                                                      # random operator events
//                                                      (tests/sim/reconfig.h)
//   dsb-sim --etcd --seeds 10000 [--break NAME]        # etcd mode: no coordinator, the ledger in
//                                                      # a model of etcd (EtcdMixedConfig)
//   dsb-sim --etcd --scenarios | --catch-table         # the same in etcd mode
//
// Prints seeds, events, S violations (must be 0), max over-grant (must be 0) and
// mean utilization. Exit status 1 if any seed broke S or over-granted.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "tests/sim/reconfig.h"
#include "tests/sim/scenarios.h"
#include "tests/sim/sim.h"

int main(int argc, char** argv) {
  CLI::App app{"Deterministic simulation of the dsb lease protocol"};
  std::uint64_t seeds = 1000, first = 1;
  int brokers = 0;
  double run_for = 20;
  bool no_faults = false, verbose = false, scenarios = false, etcd = false;
  app.add_option("--seeds", seeds, "number of seeds to run");
  app.add_option("--first-seed", first, "first seed");
  app.add_option("--brokers", brokers, "brokers per run (0 = random 2-20)");
  app.add_option("--run-for", run_for, "simulated seconds per seed");
  app.add_flag("--no-faults", no_faults, "no loss, partitions, crashes or revokes");
  app.add_flag("--verbose", verbose, "trace every protocol event (use with one seed)");
  app.add_flag("--scenarios", scenarios, "run the named edge cases with clauses on and off");
  app.add_flag("--etcd", etcd,
               "etcd mode: no coordinator; every broker applies the ledger by compare-and-swap "
               "in a model of etcd (leader changes, quorum loss, late commits); random seeds use "
               "EtcdMixedConfig, --scenarios and --catch-table run in etcd mode");
  bool server_scenarios = false, server = false, ratchet = false;
  std::string only_scenario;
  app.add_flag("--server-scenarios", server_scenarios,
               "run the server model's named scenarios (limit discovery, close lag, other tools)");
  app.add_option("--scenario", only_scenario, "with --server-scenarios or --reconfig-scenarios: only this one");
  app.add_flag("--ratchet", ratchet,
               "with --server-scenarios: the LimitPolicy ratchet test switch on (scenarios that "
               "show rule F2 is needed must then fail)");
  bool hold_after_refusal = false;
  double report_horizon = 0;
  app.add_flag("--hold-after-refusal", hold_after_refusal,
               "server model: a refused broker admits nothing above what it holds until its next "
               "grant (a proposal, off by default)");
  app.add_option("--report-horizon", report_horizon,
                 "server model: seconds a refusal report may take to arrive (0 = D; 1e-9 = owed "
                 "now only)");
  bool estimate_from_reports = false;
  app.add_flag("--estimate-from-reports", estimate_from_reports,
               "server model EXPERIMENT: count other brokers by their last report, not by "
               "floor + owed (not an upper bound)");
  app.add_flag("--server", server,
               "random seeds with the server model: real cap C <= L, close lag, other tools, "
               "refusals fed back to the coordinator's LimitPolicy");
  std::string switch_names;
  for (const auto& s : dsb::sim::AllSwitches()) switch_names += std::string(" ") + s.name;
  for (const auto& s : dsb::sim::reconfig::ReconfigSwitchList()) {
    switch_names += std::string(" ") + s.name;
  }
  bool reconfig = false, reconfig_scenarios = false;
  app.add_flag("--reconfig", reconfig,
               "random seeds of the reconfiguration model (R0-R5: generations, coordinator "
               "moves, clones, clean stops; tests/sim/reconfig.h)");
  app.add_flag("--reconfig-scenarios", reconfig_scenarios,
               "the R0-R5 named scenarios, each with all switches on and with its switch off");
  std::string broken_clause;
  app.add_option("--break", broken_clause,
                 "turn one switch off (" + switch_names.substr(1) +
                     ") to see random seeds catch it");
  bool catch_table = false, epoch_scenario = false, wall_clock_epochs = false;
  app.add_flag("--catch-table", catch_table,
               "for every switch: run --seeds random seeds with it off; print how many broke S "
               "and the first that did (replay: --break NAME --first-seed SEED --seeds 1)");
  app.add_flag("--epoch-scenario", epoch_scenario,
               "the named scenario of an epoch going backwards after a wall-clock step and a "
               "restart (liveness: the broker must get its share back)");
  app.add_flag("--wall-clock-epochs", wall_clock_epochs,
               "epochs from the wall clock (the product before R0) instead of a counter; also "
               "applies to random seeds");
  std::string profile = "mixed";
  app.add_option("--profile", profile,
                 "random seeds: mixed (random for odd seeds, hunt for multiples of 4, edge for "
                 "the rest), random (2-20 brokers, --brokers), hunt (few brokers, saturated, "
                 "faults often, clocks at the drift edge), edge (2-3 brokers at the edge of "
                 "eps = 1%, one renewing every 20 ms, the others falling silent often)");
  CLI11_PARSE(app, argc, argv);
  if (profile != "mixed" && profile != "random" && profile != "hunt" && profile != "edge") {
    std::fprintf(stderr, "unknown profile '%s' (mixed, random, hunt, edge)\n", profile.c_str());
    return 2;
  }
  if (brokers != 0 && profile == "mixed") profile = "random";
  const dsb::sim::SwitchInfo* broken = nullptr;
  const dsb::sim::reconfig::ReconfigSwitchInfo* broken_r = nullptr;
  if (!broken_clause.empty() && !(broken = dsb::sim::FindSwitch(broken_clause)) &&
      !(broken_r = dsb::sim::reconfig::FindReconfigSwitch(broken_clause))) {
    std::fprintf(stderr, "unknown switch '%s'; known:%s\n", broken_clause.c_str(),
                 switch_names.c_str());
    return 2;
  }
  if (catch_table) {
    std::printf("%-16s %8s %10s %14s %12s %12s %8s\n", "switch off", "seeds", "broke S",
                "first failing", "over-grant", "events", "wall s");
    int missed = 0;
    double total = 0;
    for (const auto& s : dsb::sim::AllSwitches()) {
      if ((broken && broken != &s) || broken_r) continue;  // --break NAME: that row only
      if (etcd ? !s.etcd : !s.embedded) continue;
      const auto row = dsb::sim::CatchSwitch(s, first, seeds, dsb::sim::Sec(run_for), false, etcd);
      total += row.wall_seconds;
      missed += row.s_broken == 0 ? 1 : 0;
      std::printf("%-16s %8llu %10llu %14s %12llu %12llu %8.1f\n", row.name.c_str(),
                  static_cast<unsigned long long>(row.seeds_run),
                  static_cast<unsigned long long>(row.s_broken),
                  row.first_failing ? std::to_string(row.first_failing).c_str() : "none",
                  static_cast<unsigned long long>(row.over_granted),
                  static_cast<unsigned long long>(row.events), row.wall_seconds);
      std::fflush(stdout);
    }
    // The reconfiguration rules: RandomReconfig seeds (60 simulated seconds).
    for (const auto& s : dsb::sim::reconfig::ReconfigSwitchList()) {
      if (broken || (broken_r && broken_r != &s) || etcd) continue;
      const auto row = dsb::sim::reconfig::CatchReconfigSwitch(s, first, seeds,
                                                               dsb::sim::Sec(60), false);
      total += row.wall_seconds;
      missed += row.s_broken == 0 ? 1 : 0;
      std::printf("%-26s %8llu %10llu %14s %12s %12llu %8.1f\n", row.name.c_str(),
                  static_cast<unsigned long long>(row.seeds_run),
                  static_cast<unsigned long long>(row.s_broken),
                  row.first_failing ? std::to_string(row.first_failing).c_str() : "none", "-",
                  static_cast<unsigned long long>(row.events), row.wall_seconds);
      std::fflush(stdout);
    }
    std::printf("%d switch(es) not caught; %.1f s wall in all (seeds from %llu, %.0f s each; "
                "R rows: RandomReconfig, 60 s each, caught only if S holds with every switch on)\n",
                missed, total, static_cast<unsigned long long>(first), run_for);
    return missed == 0 ? 0 : 1;
  }
  if (epoch_scenario) {
    const auto source = wall_clock_epochs ? dsb::sim::EpochSource::kWallClock
                                          : dsb::sim::EpochSource::kCounter;
    const auto r = dsb::sim::EpochBackwardsAfterRestart(source, verbose);
    std::printf("EpochBackwardsAfterRestart (%s epochs): %s\n",
                wall_clock_epochs ? "wall-clock" : "counter", r.failed.empty() ? "PASS" : "FAIL");
    std::printf("  %s\n", r.failed.empty() ? r.figures.c_str() : r.failed.c_str());
    return r.failed.empty() ? 0 : 1;
  }

  if (reconfig_scenarios) {
    int bad = 0;
    for (const auto& s : dsb::sim::reconfig::ReconfigScenarios()) {
      if (!only_scenario.empty() && only_scenario != s.name) continue;
      const auto on = s.run(dsb::sim::reconfig::ReconfigSwitches{}, verbose);
      dsb::sim::reconfig::ReconfigSwitches off;
      dsb::sim::reconfig::FindReconfigSwitch(s.switch_name)->turn_off(off);
      const auto broke = s.run(off, verbose);
      const bool ok = on.s_violations == 0 && broke.s_violations > 0;
      bad += ok ? 0 : 1;
      std::printf("%-36s on: %llu violations (peak %u, %llu events); off (%s): %llu violations "
                  "(peak %u) %s\n  %s\n",
                  s.name, static_cast<unsigned long long>(on.s_violations), on.max_used,
                  static_cast<unsigned long long>(on.events), s.switch_name,
                  static_cast<unsigned long long>(broke.s_violations), broke.max_used,
                  ok ? "OK" : "UNEXPECTED",
                  on.first_violation.empty() ? broke.first_violation.c_str()
                                             : on.first_violation.c_str());
    }
    return bad == 0 ? 0 : 1;
  }
  if (reconfig) {
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t events = 0, violations = 0, ops = 0, warnings = 0;
    std::vector<std::uint64_t> failing;
    for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
      auto cfg = dsb::sim::reconfig::RandomReconfig(seed, dsb::sim::Sec(run_for));
      cfg.verbose = verbose;
      if (broken_r) broken_r->turn_off(cfg.switches);
      dsb::sim::reconfig::ReconfigSim sim(cfg);
      sim.Run();
      const auto& st = sim.stats();
      events += st.events;
      violations += st.s_violations;
      ops += st.reconfig_events;
      warnings += st.warnings;
      if (st.s_violations > 0) {
        if (failing.size() < 10) std::printf("FAIL %s\n", st.first_violation.c_str());
        failing.push_back(seed);
      }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("reconfig seeds %llu (first %llu), events %llu, operator events %llu, ledger "
                "warnings %llu\nS violations %llu (must be 0); %zu failing seed(s); %.1f s wall\n",
                static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(first),
                static_cast<unsigned long long>(events), static_cast<unsigned long long>(ops),
                static_cast<unsigned long long>(warnings),
                static_cast<unsigned long long>(violations), failing.size(), secs);
    if (!failing.empty()) {
      std::printf("failing seeds:");
      for (auto s : failing) std::printf(" %llu", static_cast<unsigned long long>(s));
      std::printf("\n");
    }
    return failing.empty() ? 0 : 1;
  }

  using dsb::sim::Simulation;
  if (server_scenarios) {
    int bad = 0, ran = 0;
    for (const auto& s : dsb::sim::ServerScenarios()) {
      if (!only_scenario.empty() && only_scenario != s.name) continue;
      ++ran;
      dsb::sim::ServerOptions o;
      o.ratchet = ratchet;
      o.verbose = verbose;
      o.hold_after_refusal = hold_after_refusal;
      o.report_horizon = std::chrono::nanoseconds(static_cast<std::int64_t>(report_horizon * 1e9));
      const auto st = s.run(o);
      const std::string failed = s.check(st);
      // With --ratchet only the scenarios that show rule F2 is needed are judged.
      const bool expected = !ratchet ? failed.empty() : !s.ratchet_must_fail || !failed.empty();
      bad += expected ? 0 : 1;
      std::printf("%-36s %s%s\n  %s\n  %s\n", s.name, failed.empty() ? "PASS" : "FAIL",
                  expected ? "" : " (UNEXPECTED)", s.claim,
                  failed.empty() ? dsb::sim::Figures(st).c_str() : failed.c_str());
    }
    if (ran == 0) {
      std::fprintf(stderr, "unknown scenario '%s'\n", only_scenario.c_str());
      return 2;
    }
    return bad == 0 ? 0 : 1;
  }
  if (scenarios) {
    int bad = 0;
    using dsb::sim::EtcdFit;
    for (const auto& s : dsb::sim::Scenarios()) {
      if (!only_scenario.empty() && only_scenario != s.name) continue;
      if (etcd ? s.etcd == EtcdFit::kEmbeddedOnly : s.etcd == EtcdFit::kEtcdOnly) continue;
      const dsb::sim::RunOptions o{verbose, etcd};
      const auto on = s.run(dsb::sim::SimSwitches{}, o);
      dsb::sim::SimSwitches off;
      s.break_clause(off);
      const auto broken = s.run(off, o);
      // In etcd mode a kKeepsOnly scenario is judged only with every clause on.
      const bool judged = !etcd || s.etcd != EtcdFit::kKeepsOnly;
      const bool ok = on.s_violations == 0 && on.max_over_grant == 0 &&
                      (!judged || (s.control ? broken.s_violations == 0 : broken.s_violations > 0));
      bad += ok ? 0 : 1;
      std::printf("%-48s clause on: %llu violations; off (%s)%s: %llu violations %s\n", s.name,
                  static_cast<unsigned long long>(on.s_violations), s.clause,
                  s.control ? " [control: must hold]"
                  : judged  ? ""
                            : " [etcd: not judged]",
                  static_cast<unsigned long long>(broken.s_violations), ok ? "OK" : "UNEXPECTED");
      if (etcd && *s.etcd_note) std::printf("  etcd: %s\n", s.etcd_note);
      if (verbose || !ok) {
        std::printf("  on: %s\n  off: %s\n", on.first_violation.c_str(),
                    broken.first_violation.c_str());
      }
    }
    return bad == 0 ? 0 : 1;
  }

  const auto start = std::chrono::steady_clock::now();
  std::uint64_t events = 0, violations = 0, messages = 0;
  std::uint32_t max_over = 0;
  double util = 0, sat = 0, sat_seconds = 0;
  std::uint64_t refusals = 0, until_conv = 0, after_conv = 0, real_violations = 0, converged = 0;
  std::uint64_t limit_below = 0, lowered = 0, reached_cap = 0, by_lag = 0;
  double server_util = 0, gap = 0;
  std::uint64_t above = 0;
  std::vector<std::uint64_t> failing;
  dsb::sim::SimStats etcd_totals;
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    auto cfg =
        server ? dsb::sim::RandomServerConfig(seed, brokers, dsb::sim::Sec(run_for), !no_faults)
        : profile == "hunt" && !no_faults ? dsb::sim::HuntConfig(seed, dsb::sim::Sec(run_for))
        : profile == "edge" && !no_faults ? dsb::sim::EdgeConfig(seed, dsb::sim::Sec(run_for))
        : etcd && !no_faults              ? dsb::sim::EtcdMixedConfig(seed, dsb::sim::Sec(run_for))
        : profile == "mixed" && !no_faults
            ? dsb::sim::MixedConfig(seed, dsb::sim::Sec(run_for))
            : dsb::sim::RandomConfig(seed, brokers, dsb::sim::Sec(run_for), !no_faults);
    cfg.verbose = verbose;
    if (server) {
      cfg.server.hold_after_refusal = hold_after_refusal;
      cfg.server.estimate_from_reports = estimate_from_reports;
      if (report_horizon > 0) {
        cfg.server.report_horizon =
            std::chrono::nanoseconds(static_cast<std::int64_t>(report_horizon * 1e9));
      }
    }
    if (wall_clock_epochs) cfg.epoch_source = dsb::sim::EpochSource::kWallClock;
    if (etcd) cfg.etcd.enabled = true;
    if (broken) {
      dsb::sim::SimSwitches off;
      off.protocol = cfg.switches;
      off.glue = cfg.glue;
      off.etcd = cfg.etcd_switches;
      broken->turn_off(off);
      cfg.switches = off.protocol;
      cfg.glue = off.glue;
      cfg.etcd_switches = off.etcd;
    }
    Simulation sim(cfg);
    sim.Run();
    const auto& st = sim.stats();
    events += st.events;
    messages += st.messages;
    etcd_totals.store_txns += st.store_txns;
    etcd_totals.lost_compares += st.lost_compares;
    etcd_totals.store_timeouts += st.store_timeouts;
    etcd_totals.late_commits += st.late_commits;
    etcd_totals.leader_changes += st.leader_changes;
    etcd_totals.live_keys_expired += st.live_keys_expired;
    etcd_totals.abandoned_renews += st.abandoned_renews;
    violations += st.s_violations;
    max_over = std::max(max_over, st.max_over_grant);
    util += st.utilization;
    sat += st.saturated_utilization * st.saturated_seconds;
    sat_seconds += st.saturated_seconds;
    std::string server_failure;
    if (server) {
      refusals += st.refusals;
      until_conv += st.refusals_until_convergence;
      after_conv += st.refusals_after_convergence;
      real_violations += st.real_cap_violations;
      limit_below += st.limit_below_cap_violations;
      converged += st.converged_at >= 0 ? 1 : 0;
      lowered += st.min_limit < cfg.limit ? 1 : 0;
      reached_cap += st.cap < cfg.limit && st.limit == st.cap ? 1 : 0;
      by_lag += st.refusals_by_lag;
      if (st.limit > st.cap) {
        ++above;
        gap += st.limit - st.cap;
      }
      server_util += st.server_utilization;
      server_failure = dsb::sim::CheckServerRun(st);
    }
    if (st.s_violations > 0 || st.max_over_grant > 0 || !server_failure.empty()) {
      if (failing.size() < 10) {
        std::printf("FAIL %s (over-grant %u) %s\n", st.first_violation.c_str(),
                    st.max_over_grant, server_failure.c_str());
      }
      failing.push_back(seed);
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (etcd) {
    std::printf(
        "etcd mode: store transactions %llu, lost compares %llu, call timeouts %llu, "
        "late commits %llu, leader changes %llu, live keys expired %llu, renews "
        "abandoned %llu\n",
        static_cast<unsigned long long>(etcd_totals.store_txns),
        static_cast<unsigned long long>(etcd_totals.lost_compares),
        static_cast<unsigned long long>(etcd_totals.store_timeouts),
        static_cast<unsigned long long>(etcd_totals.late_commits),
        static_cast<unsigned long long>(etcd_totals.leader_changes),
        static_cast<unsigned long long>(etcd_totals.live_keys_expired),
        static_cast<unsigned long long>(etcd_totals.abandoned_renews));
  }
  std::printf(
      "seeds %llu (first %llu), events %llu, messages %llu\n"
      "S violations %llu (must be 0), max over-grant %u (must be 0)\n"
      "mean utilization %.4f (held / min(demand, pool)), saturated utilization %.4f over %.0f s\n"
      "%.1f s wall, %.0f seeds/s, %.0f events/s\n",
      static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(first),
      static_cast<unsigned long long>(events), static_cast<unsigned long long>(messages),
      static_cast<unsigned long long>(violations), max_over, util / static_cast<double>(seeds),
      sat_seconds > 0 ? sat / sat_seconds : 1.0, sat_seconds, secs,
      static_cast<double>(seeds) / secs, static_cast<double>(events) / secs);
  if (server) {
    std::printf(
        "server model: refusals %llu (until convergence %llu, after %llu; by lag %llu), "
        "converged %llu of %llu seeds, limit lowered in %llu, ended at C in %llu (of those with "
        "C < L)\n"
        "S against the real cap after convergence: %llu violations (must be 0); limit below C - "
        "other tools: %llu (must be 0); mean server utilization %.4f\n"
        "limit still above C at the end in %llu seeds (mean excess %.2f)\n",
        static_cast<unsigned long long>(refusals), static_cast<unsigned long long>(until_conv),
        static_cast<unsigned long long>(after_conv), static_cast<unsigned long long>(by_lag),
        static_cast<unsigned long long>(converged), static_cast<unsigned long long>(seeds),
        static_cast<unsigned long long>(lowered), static_cast<unsigned long long>(reached_cap),
        static_cast<unsigned long long>(real_violations),
        static_cast<unsigned long long>(limit_below), server_util / static_cast<double>(seeds),
        static_cast<unsigned long long>(above), above > 0 ? gap / static_cast<double>(above) : 0.0);
  }
  if (!failing.empty()) {
    std::printf("failing seeds:");
    for (auto s : failing) std::printf(" %llu", static_cast<unsigned long long>(s));
    std::printf("\n");
  }
  return failing.empty() ? 0 : 1;
}
