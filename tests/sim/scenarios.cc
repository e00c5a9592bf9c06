#include "tests/sim/scenarios.h"

#include <random>

namespace dsb::sim {
namespace {

using lease::ProtocolSwitches;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Two brokers a (index 0, starts at 0) and b (index 1, starts at 1 s), one
// system slot each, floor 0, L = 12: pool 10. D = 6 s (renew every 2 s, resend
// every 0.5 s), H = 2 s. Network: 1 ms, no loss. Adversarial clients.
SimConfig Base(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c;
  c.limit = 12;
  c.brokers.resize(2);
  c.brokers[0].demand = 10;
  c.brokers[1].start_at = Sec(1);
  c.term = seconds(6);
  c.drain = seconds(2);
  c.switches = sw;
  c.early_renew = false;  // request ids follow the renew timer, as the scripts assume
  c.run_for = Sec(30);
  c.verbose = verbose;
  return c;
}

constexpr int kA = 0;
constexpr int kB = 1;

bool IsGrant(const MsgInfo& m, int broker, std::uint64_t epoch, std::uint64_t id) {
  return m.kind == MsgInfo::kGrant && m.broker == broker && m.epoch == epoch && m.request_id == id;
}

SimStats Finish(Simulation& sim) {
  sim.Run();
  return sim.stats();
}

// a was granted 10 under request 2 and holds 0 when it sends request 3; the
// answer (a shrink to 0, since a wants nothing) is delayed; a's clients then fill
// its still-valid lease. Owed must stay 10 (grant 2 is unacknowledged).
SimStats ShrinkGrantDelayedWhileHeldZeroReported(const ProtocolSwitches& sw, bool verbose) {
  Simulation sim(Base(sw, verbose));
  sim.SetNetworkHook([](const MsgInfo& m, RealTime now) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 3)) return Fate{false, now + Sec(1.5)};
    return std::nullopt;
  });
  sim.At(Sec(3.5), [&] {
    sim.SetDemand(kA, 0);
    sim.SetDemand(kB, 10);
  });
  sim.At(Sec(4.1), [&] { sim.SetDemand(kA, 10); });
  return Finish(sim);
}

// As above but the shrink grant is lost.
SimStats LostShrinkGrant(const ProtocolSwitches& sw, bool verbose) {
  Simulation sim(Base(sw, verbose));
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 3)) return Fate{true, {}};
    return std::nullopt;
  });
  sim.At(Sec(3.5), [&] {
    sim.SetDemand(kA, 0);
    sim.SetDemand(kB, 10);
  });
  sim.At(Sec(4.1), [&] { sim.SetDemand(kA, 10); });
  return Finish(sim);
}

// a's request 3 ("held 0") is delayed past requests 4 and 5 (which report held
// 10 while a drains); processing it late would lower owed below what a holds.
SimStats ReorderedOlderReport(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.drain = seconds(4);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (m.kind == MsgInfo::kRequest && m.broker == kA && m.request_id == 3) {
      if (m.resend) return Fate{true, {}};
      return Fate{false, Sec(8.5)};
    }
    return std::nullopt;
  });
  sim.At(Sec(3.5), [&] {
    sim.SetDemand(kA, 0);
    sim.SetDemand(kB, 10);
  });
  sim.At(Sec(4.1), [&] { sim.SetDemand(kA, 10); });
  return Finish(sim);
}

// a's request 3 arrives at once but its grant is slow; a resends (the resends
// are lost), the grant arrives, then a is cut off. The lease must count from
// the first send, or it outlives the coordinator's silence timer.
SimStats ResentRequest(const ProtocolSwitches& sw, bool verbose) {
  Simulation sim(Base(sw, verbose));
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 3)) return Fate{false, Sec(5.9)};
    if (m.kind == MsgInfo::kRequest && m.broker == kA && m.request_id == 3 && m.resend) {
      return Fate{true, {}};
    }
    return std::nullopt;
  });
  sim.At(Sec(5.95), [&] { sim.Partition(kA, true); });
  sim.At(Sec(6.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a's grant 3 (10) is delayed until after grant 4 (5) was applied, acknowledged
// and b got the other 5.
SimStats OldGrantAfterNewerOnes(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.drain = seconds(1);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 3)) return Fate{false, Sec(9.5)};
    return std::nullopt;
  });
  sim.At(Sec(4.5), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a's grant for epoch 1 request 4 is delayed; a restarts (epoch 2) and reuses
// request ids; the old grant arrives while epoch 2's request 4 is outstanding.
SimStats PreviousEpochGrantAfterRestart(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.drain = seconds(1);
  c.brokers[kB].start_at = Sec(1.5);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 4)) return Fate{false, Sec(12.7)};
    if (IsGrant(m, kA, 2, 4)) return Fate{false, Sec(13.7)};
    return std::nullopt;
  });
  sim.At(Sec(6.3), [&] { sim.CrashBroker(kA); });
  sim.At(Sec(6.4), [&] { sim.SetDemand(kB, 10); });
  sim.At(Sec(6.6), [&] { sim.RestartBroker(kA); });
  return Finish(sim);
}

// The admin revokes a; the notice is lost; b wants the pool.
SimStats RevokeNoticeLost(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.drain = seconds(1);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (m.kind == MsgInfo::kNotice) return Fate{true, {}};
    return std::nullopt;
  });
  sim.At(Sec(4.5), [&] {
    sim.Revoke(kA);
    sim.SetDemand(kB, 10);
  });
  return Finish(sim);
}

// a's clock runs eps slow, the coordinator's eps fast (eps = 1%), and a is cut
// off holding its lease; b renews every 20 ms to catch the first moment the
// coordinator frees a's share.
SimStats ClockEdgeWhileCutOff(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.eps = 0.01;
  c.brokers[kA].clock_ppm = -10000;
  c.coordinator_ppm = 10000;
  c.brokers[kB].start_at = Sec(0.5);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.At(Sec(4.5), [&] { sim.Partition(kA, true); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// The coordinator restarts (without state) 20 ms after granting a its lease.
SimStats CoordinatorRestart20msAfterGrant(const ProtocolSwitches& sw, bool verbose) {
  Simulation sim(Base(sw, verbose));
  sim.At(Sec(2.021), [&] {
    sim.CrashCoordinator();
    sim.RestartCoordinator();
  });
  sim.At(Sec(2.5), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a may run two DigiScope instances (system_slots 2); the first one's actions
// fill a's whole lease, then a second instance registers.
SimStats SecondDigiScopeWhileActionsFillLease(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.limit = 13;
  c.brokers[kA].system_slots = 2;
  c.brokers[kA].demand = 12;
  Simulation sim(c);
  sim.At(Sec(3.0), [&] { sim.RegisterClient(kA); });
  return Finish(sim);
}

// a holds 0 when it sends request 3; its clients then fill the old lease; the
// shrink answering request 3 arrives; request 4 must report the 10 held
// together with applied = 3, not a held count read before the grant.
SimStats HeldAndAppliedReadApart(const ProtocolSwitches& sw, bool verbose) {
  SimConfig c = Base(sw, verbose);
  c.brokers[kB].start_at = Sec(0.5);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 3)) return Fate{false, Sec(5.0)};
    return std::nullopt;
  });
  sim.At(Sec(3.5), [&] { sim.SetDemand(kA, 0); });
  sim.At(Sec(3.6), [&] { sim.SetDemand(kB, 10); });
  sim.At(Sec(4.1), [&] { sim.SetDemand(kA, 10); });
  return Finish(sim);
}

}  // namespace

const std::vector<Scenario>& Scenarios() {
  static const std::vector<Scenario> all = {
      {"ShrinkGrantDelayedWhileHeldZeroReported", "C1 owed counts unacknowledged grants",
       [](ProtocolSwitches& s) { s.c1_owed_counts_unacked_grants = false; },
       &ShrinkGrantDelayedWhileHeldZeroReported},
      {"LostShrinkGrant", "C1 owed counts unacknowledged grants",
       [](ProtocolSwitches& s) { s.c1_owed_counts_unacked_grants = false; }, &LostShrinkGrant},
      {"ReorderedOlderReport", "Requests: a stale request changes nothing",
       [](ProtocolSwitches& s) { s.request_staleness = false; }, &ReorderedOlderReport},
      {"ResentRequest", "B1 lease counts from the first send",
       [](ProtocolSwitches& s) { s.b1_first_t_sent = false; }, &ResentRequest},
      {"OldGrantAfterNewerOnes", "B1a request id must exceed the applied one",
       [](ProtocolSwitches& s) { s.b1a_order = false; }, &OldGrantAfterNewerOnes},
      {"PreviousEpochGrantAfterRestart", "B1a epoch must be ours",
       [](ProtocolSwitches& s) { s.b1a_epoch = false; }, &PreviousEpochGrantAfterRestart},
      {"RevokeNoticeLost", "C2 revoke does not lower owed",
       [](ProtocolSwitches& s) { s.c2_revoke_keeps_owed = false; }, &RevokeNoticeLost},
      {"ClockEdgeWhileCutOff", "B1 lease ends at D(1 - eps)",
       [](ProtocolSwitches& s) { s.b1_eps_margin = false; }, &ClockEdgeWhileCutOff},
      {"CoordinatorRestart20msAfterGrant", "C3 learning mode",
       [](ProtocolSwitches& s) { s.c3_learning = false; }, &CoordinatorRestart20msAfterGrant},
      {"SecondDigiScopeWhileActionsFillLease", "B1 two counters",
       [](ProtocolSwitches& s) { s.b1_two_counters = false; },
       &SecondDigiScopeWhileActionsFillLease},
      {"HeldAndAppliedReadApart", "B2 held and applied read at one instant",
       [](ProtocolSwitches& s) { s.b2_one_instant = false; }, &HeldAndAppliedReadApart},
  };
  return all;
}

SimConfig RandomConfig(std::uint64_t seed, int brokers, RealTime run_for, bool faults) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
  auto below = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  SimConfig c;
  c.seed = seed;
  c.run_for = run_for;
  const int k = brokers > 0 ? brokers : 2 + static_cast<int>(below(19));
  c.term = below(2) == 0 ? seconds(3) : seconds(6);
  c.drain = milliseconds(500 + static_cast<std::int64_t>(below(1500)));
  c.eps = 1e-3;
  const auto max_ppm = static_cast<std::int64_t>(c.eps * 1e6);
  auto drift = [&]() -> std::int64_t {
    switch (below(3)) {
      case 0:
        return -max_ppm;
      case 1:
        return max_ppm;
      default:
        return static_cast<std::int64_t>(below(static_cast<std::uint64_t>(2 * max_ppm + 1))) -
               max_ppm;
    }
  };
  c.coordinator_ppm = drift();
  const bool weighted = below(2) == 0;
  std::uint32_t reserved = 0;
  for (int i = 0; i < k; ++i) {
    BrokerSpec b;
    b.system_slots = 1 + static_cast<std::uint32_t>(below(2));
    b.floor = static_cast<std::uint32_t>(below(3));
    b.weight = weighted ? 1 + static_cast<std::uint32_t>(below(3)) : 1;
    b.clock_ppm = drift();
    b.start_at = static_cast<RealTime>(below(static_cast<std::uint64_t>(Sec(1))));
    b.instances = 1 + static_cast<std::uint32_t>(below(b.system_slots));
    reserved += b.system_slots + b.floor;
    c.brokers.push_back(b);
  }
  const std::uint32_t pool =
      static_cast<std::uint32_t>(k) * (2 + static_cast<std::uint32_t>(below(5)));
  c.reserve = static_cast<std::uint32_t>(below(3));
  c.limit = reserved + pool + c.reserve;
  c.max_demand = 2 * pool / static_cast<std::uint32_t>(k) + 3;
  for (auto& b : c.brokers) b.demand = static_cast<std::uint32_t>(below(c.max_demand + 1));
  c.demand_change_every = 1 + 4 * uniform();
  c.adversarial_clients = below(4) == 0;
  c.early_renew = below(4) != 0;
  c.session_min = Ms(10);
  c.session_max = Ms(100) + static_cast<RealTime>(below(static_cast<std::uint64_t>(Sec(3))));
  if (faults) {
    c.net.loss = 0.1 * uniform();
    c.net.duplicate = 0.05 * uniform();
    c.net.min_delay = 100'000 + static_cast<RealTime>(below(5'000'000));
    c.net.max_delay = c.net.min_delay + static_cast<RealTime>(below(20'000'000));
    c.net.long_delay = 0.05 * uniform();
    c.net.long_delay_max = static_cast<RealTime>(below(static_cast<std::uint64_t>(c.term.count())));
    c.faults.partition_every = 5 + 15 * uniform();
    c.faults.broker_crash_every = 10 + 30 * uniform();
    c.faults.coordinator_crash_every = 20 + 60 * uniform();
    c.faults.revoke_every = 15 + 45 * uniform();
  } else {
    c.net.min_delay = Ms(1);
    c.net.max_delay = Ms(5);
  }
  return c;
}

}  // namespace dsb::sim
