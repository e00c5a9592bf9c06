// The simulation's etcd mode (sim.h, issue 13): no coordinator; every broker
// applies the ledger's rules by compare-and-swap in a model of etcd (leader
// changes with TTL resets, quorum loss, writes that commit after their client
// gave up, a deposed leader answering keepalives, a wiped store). The named
// scenarios run in etcd mode where they apply; random seeds keep S.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/sim/scenarios.h"
#include "tests/sim/sim.h"

namespace dsb::sim {
namespace {

std::uint64_t EnvOr(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

class EtcdEdgeCase : public ::testing::TestWithParam<std::size_t> {};

// Every named scenario that applies to etcd mode keeps S (and never
// over-grants) with every clause on.
TEST_P(EtcdEdgeCase, KeepsSWithEveryClause) {
  const Scenario& s = Scenarios()[GetParam()];
  if (s.etcd == EtcdFit::kEmbeddedOnly) GTEST_SKIP() << s.etcd_note;
  const SimStats st = s.run(SimSwitches{}, RunOptions{false, true});
  EXPECT_EQ(st.s_violations, 0u) << st.first_violation;
  EXPECT_EQ(st.max_over_grant, 0u);
  EXPECT_GT(st.store_txns, 0u) << "the ledger was never written: the run proves nothing";
}

// ...and breaks S with its clause off where that clause guards S in etcd mode.
TEST_P(EtcdEdgeCase, BreaksSWithoutItsClause) {
  const Scenario& s = Scenarios()[GetParam()];
  if (s.etcd == EtcdFit::kEmbeddedOnly || s.etcd == EtcdFit::kKeepsOnly) {
    GTEST_SKIP() << s.etcd_note;
  }
  SimSwitches off;
  s.break_clause(off);
  const SimStats st = s.run(off, RunOptions{false, true});
  if (s.control) {
    EXPECT_EQ(st.s_violations, 0u) << s.name << " (control): " << st.first_violation;
    return;
  }
  EXPECT_GT(st.s_violations, 0u) << s.name
                                 << " did not break S in etcd mode with clause off: " << s.clause
                                 << " (" << s.etcd_note << ")";
  std::printf("%s (etcd) without \"%s\": %s\n", s.name, s.clause, st.first_violation.c_str());
}

INSTANTIATE_TEST_SUITE_P(Etcd, EtcdEdgeCase, ::testing::Range<std::size_t>(0, Scenarios().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return std::string(Scenarios()[info.param].name);
                         });

// The deposed leader's keepalive answer is what breaks the broker that trusts
// its store lease: without the leader change the same script keeps S.
TEST(EtcdScenario, TrustingTheStoreLeaseBreaksOnlyThroughTheLeaderChange) {
  SimSwitches off;
  off.etcd.b1_own_clock = false;
  SimConfig c;
  c.limit = 12;
  c.brokers.resize(2);
  c.brokers[0].demand = 10;
  c.brokers[1].start_at = Sec(1);
  c.brokers[1].renew_interval = std::chrono::milliseconds(20);
  c.term = std::chrono::seconds(6);
  c.drain = std::chrono::milliseconds(500);
  c.early_renew = false;
  c.run_for = Sec(30);
  c.etcd.enabled = true;
  c.etcd_switches = off.etcd;
  for (bool leader_change : {false, true}) {
    Simulation sim(c);
    if (leader_change) sim.At(Sec(4.1), [&] { sim.LeaderChange(Ms(300), Sec(1)); });
    sim.At(Sec(5.0), [&] {
      sim.SetDemand(1, 10);
      sim.ForceRenew(0);
    });
    sim.At(Sec(5.05), [&] { sim.Partition(0, true); });
    sim.Run();
    if (leader_change) {
      EXPECT_GT(sim.stats().s_violations, 0u);
      EXPECT_EQ(sim.stats().leader_changes, 1u);
    } else {
      EXPECT_EQ(sim.stats().s_violations, 0u) << sim.stats().first_violation;
    }
  }
}

// The issue's "with quorum lost, no broker exceeds its last valid lease and
// then its floor": two brokers share the pool; the store loses quorum from
// 5 s to 25 s. Nothing commits meanwhile, every lease has lapsed by 5 s + D
// (the last grant's t_sent was before 5 s), S holds throughout, and once a
// leader is elected (every TTL reset) capacity is granted again.
TEST(EtcdScenario, QuorumLossLeavesLeasesThenFloorsAndNoGrant) {
  SimConfig c;
  c.limit = 12;
  c.brokers.resize(2);
  c.brokers[0].demand = 10;
  c.brokers[1].demand = 10;
  c.brokers[1].start_at = Sec(0.5);
  c.term = std::chrono::seconds(6);
  c.drain = std::chrono::seconds(2);
  c.run_for = Sec(40);
  c.etcd.enabled = true;
  Simulation sim(c);
  std::uint64_t txns_at_loss = 0, txns_before_election = 0;
  std::uint32_t lease_at_loss = 0, lease_after_d = 99, lease_at_end = 0;
  sim.At(Sec(5), [&] {
    lease_at_loss = sim.lease(0) + sim.lease(1);
    txns_at_loss = sim.stats().store_txns;
    sim.PauseCoordinator(Sec(25));
  });
  sim.At(Sec(5) + c.term.count(), [&] { lease_after_d = sim.lease(0) + sim.lease(1); });
  sim.At(Sec(24.999), [&] { txns_before_election = sim.stats().store_txns; });
  sim.At(Sec(39), [&] { lease_at_end = sim.lease(0) + sim.lease(1); });
  sim.Run();
  const SimStats& st = sim.stats();
  EXPECT_EQ(st.s_violations, 0u) << st.first_violation;
  EXPECT_GT(lease_at_loss, 0u);
  EXPECT_EQ(lease_after_d, 0u) << "a lease outlived D without the store";
  EXPECT_EQ(txns_before_election, txns_at_loss) << "a write committed without quorum";
  EXPECT_GT(lease_at_end, 0u) << "no grant after the store came back";
  std::printf("quorum lost 5-25 s: leases %u at the loss, %u at 5 s + D, %u at 39 s; %llu "
              "transactions, %llu late commits\n",
              lease_at_loss, lease_after_d, lease_at_end,
              static_cast<unsigned long long>(st.store_txns),
              static_cast<unsigned long long>(st.late_commits));
}

// Random seeds in etcd mode (EtcdMixedConfig: RandomConfig, HuntConfig and
// EdgeConfig seeds with leader changes, quorum losses, deposed leaders
// answering keepalives, late commits, wiped stores): every seed keeps S and
// never over-grants. DSB_SIM_ETCD_SEEDS / DSB_SIM_FIRST_SEED override the
// sweep (dsb-sim --etcd runs long sweeps).
TEST(EtcdRandom, SeedsKeepSAndNeverOverGrant) {
  const std::uint64_t seeds = EnvOr("DSB_SIM_ETCD_SEEDS", 24);
  const std::uint64_t first = EnvOr("DSB_SIM_FIRST_SEED", 1);
  const RealTime run_for = Sec(20);
  const auto start = std::chrono::steady_clock::now();
  SimStats total;
  double util = 0;
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    Simulation sim(EtcdMixedConfig(seed, run_for));
    sim.Run();
    const SimStats& st = sim.stats();
    total.events += st.events;
    total.store_txns += st.store_txns;
    total.lost_compares += st.lost_compares;
    total.store_timeouts += st.store_timeouts;
    total.late_commits += st.late_commits;
    total.leader_changes += st.leader_changes;
    total.live_keys_expired += st.live_keys_expired;
    util += st.utilization;
    ASSERT_EQ(st.s_violations, 0u) << st.first_violation << "\nreplay: dsb-sim --etcd --first-seed "
                                   << seed << " --seeds 1 --run-for 20 --verbose";
    ASSERT_EQ(st.max_over_grant, 0u) << "seed " << seed << " over-granted; replay: dsb-sim --etcd "
                                     << "--first-seed " << seed << " --seeds 1 --run-for 20";
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "%llu etcd-mode seeds (first %llu), %llu events, %llu transactions, %llu lost "
      "compares, %llu call timeouts, %llu late commits, %llu leader changes, %llu live "
      "keys expired, mean utilization %.3f, %.1f s\n",
      static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(first),
      static_cast<unsigned long long>(total.events),
      static_cast<unsigned long long>(total.store_txns),
      static_cast<unsigned long long>(total.lost_compares),
      static_cast<unsigned long long>(total.store_timeouts),
      static_cast<unsigned long long>(total.late_commits),
      static_cast<unsigned long long>(total.leader_changes),
      static_cast<unsigned long long>(total.live_keys_expired), util / static_cast<double>(seeds),
      secs);
  // The faults the mode exists for did happen (the sweep is not vacuous).
  if (seeds >= 20) {
    EXPECT_GT(total.leader_changes, 0u);
    EXPECT_GT(total.late_commits, 0u);
    EXPECT_GT(total.lost_compares, 0u);
    EXPECT_GT(total.live_keys_expired, 0u);
  }
}

TEST(EtcdRandom, SameSeedReplaysExactly) {
  for (std::uint64_t seed : {7ull, 12ull, 6ull}) {
    Simulation a(EtcdMixedConfig(seed, Sec(10)));
    Simulation b(EtcdMixedConfig(seed, Sec(10)));
    a.Run();
    b.Run();
    EXPECT_EQ(a.stats().events, b.stats().events);
    EXPECT_EQ(a.stats().messages, b.stats().messages);
    EXPECT_EQ(a.stats().store_txns, b.stats().store_txns);
    EXPECT_DOUBLE_EQ(a.stats().utilization, b.stats().utilization);
  }
}

// Without faults, capacity still flows between brokers with no coordinator:
// when demand exceeds the pool, held slots stay near it.
TEST(EtcdRandom, FaultFreeSaturatedUtilizationIsHigh) {
  double sat = 0, weight = 0;
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    SimConfig c = RandomConfig(seed, 0, Sec(30), /*faults=*/false);
    c.etcd.enabled = true;
    Simulation sim(c);
    sim.Run();
    const SimStats& st = sim.stats();
    ASSERT_EQ(st.s_violations, 0u) << st.first_violation;
    sat += st.saturated_utilization * st.saturated_seconds;
    weight += st.saturated_seconds;
  }
  ASSERT_GT(weight, 0);
  std::printf("etcd mode, fault-free saturated utilization %.3f over %.0f s\n", sat / weight,
              weight);
  EXPECT_GT(sat / weight, 0.70);
}

}  // namespace
}  // namespace dsb::sim
