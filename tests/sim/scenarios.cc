#include "tests/sim/scenarios.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>

namespace dsb::sim {
namespace {

using lease::ProtocolSwitches;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Two brokers a (index 0, starts at 0) and b (index 1, starts at 1 s), one
// system slot each, floor 0, L = 12: pool 10. D = 6 s (renew every 2 s, resend
// every 0.5 s), H = 2 s. Network: 1 ms, no loss. Adversarial clients.
SimConfig Base(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c;
  c.limit = 12;
  c.brokers.resize(2);
  c.brokers[0].demand = 10;
  c.brokers[1].start_at = Sec(1);
  c.term = seconds(6);
  c.drain = seconds(2);
  c.switches = sw.protocol;
  c.glue = sw.glue;
  c.early_renew = false;  // request ids follow the renew timer, as the scripts assume
  c.run_for = Sec(30);
  c.verbose = o.verbose;
  c.etcd.enabled = o.etcd;
  c.etcd_switches = sw.etcd;
  return c;
}

constexpr int kA = 0;
constexpr int kB = 1;

// The grant answering (broker, epoch, id) on its way to the broker: the
// coordinator's message, or in etcd mode the answer to the transaction that
// recorded it (a lost or late answer: the broker re-reads after its call
// timeout and gets the stored reply, as the real one does).
bool IsGrant(const MsgInfo& m, int broker, std::uint64_t epoch, std::uint64_t id) {
  const bool grant = m.kind == MsgInfo::kGrant ||
                     (m.kind == MsgInfo::kStoreReply && m.store_op == MsgInfo::kTxn && m.committed);
  return grant && m.broker == broker && m.epoch == epoch && m.request_id == id;
}

SimStats Finish(Simulation& sim) {
  sim.Run();
  return sim.stats();
}

// a was granted 10 under request 2 and holds 0 when it sends request 3; the
// answer (a shrink to 0, since a wants nothing) is delayed; a's clients then fill
// its still-valid lease. Owed must stay 10 (grant 2 is unacknowledged).
SimStats ShrinkGrantDelayedWhileHeldZeroReported(const SimSwitches& sw, const RunOptions& o) {
  Simulation sim(Base(sw, o));
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
SimStats LostShrinkGrant(const SimSwitches& sw, const RunOptions& o) {
  Simulation sim(Base(sw, o));
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
SimStats ReorderedOlderReport(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
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

// ResentRequest's etcd form. The store's silence counts from the keepalive,
// which follows the FIRST send; etcd's whole-second TTL adds slack, so
// H = 1.99 s makes (D + H)(1 + eps) = 7.998 s round to a TTL of 8 s. a's
// request 3 (4.0 s): keepalive at once, the read's and the transaction's
// answers each take 0.45 s (under the call timeout), so the grant arrives at
// 4.9 s, after the agent's resend at 4.5 s. a is then cut off one way (its
// calls are lost). b starts at 4.6 s (so no write of b makes a's transaction
// lose its compare), wants the pool from 5 s and renews every 20 ms. Counted
// from the resend, a's lease outlives its store lease by ~0.5 s.
SimStats ResentRequestEtcd(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
  c.drain = milliseconds(1990);
  c.brokers[kB].start_at = Sec(4.6);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime now) -> std::optional<Fate> {
    if (m.kind == MsgInfo::kStoreReply && m.broker == kA && m.request_id == 3 &&
        (m.store_op == MsgInfo::kRange || m.store_op == MsgInfo::kTxn)) {
      return Fate{false, now + Ms(450)};
    }
    return std::nullopt;
  });
  sim.At(Sec(4.47), [&] { sim.PartitionOneWay(kA, true, false); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a's request 3 arrives at once but its grant is slow; a resends (the resends
// are lost), the grant arrives, then a is cut off. The lease must count from
// the first send, or it outlives the coordinator's silence timer.
SimStats ResentRequest(const SimSwitches& sw, const RunOptions& o) {
  if (o.etcd) return ResentRequestEtcd(sw, o);
  Simulation sim(Base(sw, o));
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
SimStats OldGrantAfterNewerOnes(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
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
SimStats PreviousEpochGrantAfterRestart(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
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
SimStats RevokeNoticeLost(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
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
SimStats ClockEdgeWhileCutOff(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
  c.eps = 0.01;
  c.brokers[kA].clock_ppm = -10000;
  c.coordinator_ppm = 10000;
  c.etcd.member_ppm.assign(3, 10000);
  // etcd: whole-second TTLs; (D + H)(1 + eps) = 7.979 s rounds to 8 s only a
  // little above it (the store leader's fast clock expires it 7.921 s later).
  if (o.etcd) c.drain = milliseconds(1900);
  c.brokers[kB].start_at = Sec(0.5);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.At(Sec(4.5), [&] { sim.Partition(kA, true); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// The coordinator restarts (without state) 20 ms after granting a its lease.
SimStats CoordinatorRestart20msAfterGrant(const SimSwitches& sw, const RunOptions& o) {
  Simulation sim(Base(sw, o));
  sim.At(Sec(2.021), [&] {
    sim.CrashCoordinator();
    sim.RestartCoordinator();
  });
  sim.At(Sec(2.5), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a may run two DigiScope instances (system_slots 2); the first one's actions
// fill a's whole lease, then a second instance registers.
SimStats SecondDigiScopeWhileActionsFillLease(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
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
SimStats HeldAndAppliedReadApart(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
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

// ---- issue 8: delays past D and D + H, drift edges, stopped processes ----

// a's request 3 (sent at 4.0 s, held 10) reaches the coordinator; then a is cut
// off one way (its requests are lost, grants still reach it). The grant for
// request 3 arrives at 10.1 s: past D after the first send, so the lease has
// lapsed on arrival, but not D after the last resend (5.5 s). b wants the pool.
SimStats GrantDelayedPastD(const SimSwitches& sw, const RunOptions& o) {
  Simulation sim(Base(sw, o));
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 3)) return Fate{false, Sec(10.1)};
    return std::nullopt;
  });
  sim.At(Sec(4.01), [&] { sim.PartitionOneWay(kA, true, false); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a's request 3 (sent at 4.0 s, reporting held 0: a was idle then) is delayed
// to 14.5 s, past D + H after its send. Meanwhile a holds 10; b wants the pool
// from 10.5 s, so a's grant 7 (12 s) shrinks a to 5 and a's clients yield
// until 16 s; request 8 (14 s) reports 10 held, applied 7. Processing the late
// request as the newest would take owed down to the shrunk grant (5) while a
// still holds 10, and b's request at 15 s would get the difference. (With R4 a
// late request from an OLDER epoch is the other form of this case.)
SimStats RequestDelayedPastDPlusH(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
  c.drain = seconds(4);
  Simulation sim(c);
  sim.SetNetworkHook([](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (m.kind == MsgInfo::kRequest && m.broker == kA && m.request_id == 3) {
      if (m.resend) return Fate{true, {}};
      return Fate{false, Sec(14.5)};
    }
    return std::nullopt;
  });
  sim.At(Sec(3.5), [&] { sim.SetDemand(kA, 0); });
  sim.At(Sec(4.1), [&] { sim.SetDemand(kA, 10); });
  sim.At(Sec(10.5), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// eps = 1%; a's clock runs eps slow, the coordinator's eps fast. The
// coordinator sends a the grant for a's request 2 (30 ms on the wire) and
// restarts `restart_after` later, without state; a is cut off one way right
// after request 2 arrived, so the new ledger never hears of a's lease. b
// renews every 20 ms to take the pool the moment learning ends. Learning must
// last (D + H)(1 + eps) on the coordinator's clock: a's slots are back only
// D + H of real time after a sent request 2.
SimStats CoordinatorRestartWithGrantInFlight(const SimSwitches& sw, const RunOptions& o,
                                             RealTime restart_after) {
  SimConfig c = Base(sw, o);
  c.eps = 0.01;
  c.brokers[kA].clock_ppm = -10000;
  c.coordinator_ppm = 10000;
  c.etcd.member_ppm.assign(3, 10000);
  c.brokers[kB].start_at = Sec(0.5);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.SetNetworkHook([&sim, restart_after](const MsgInfo& m, RealTime now) -> std::optional<Fate> {
    if (IsGrant(m, kA, 1, 2)) {
      sim.At(now, [&sim] { sim.PartitionOneWay(kA, true, false); });
      sim.At(now + restart_after, [&sim] {
        sim.CrashCoordinator();
        sim.RestartCoordinator();
      });
      return Fate{false, now + Ms(30)};
    }
    return std::nullopt;
  });
  sim.At(Sec(2.5), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// The restart 1 ms after the grant was sent (the grant is still in flight).
SimStats CoordinatorRestartAtDriftEdgeWithGrantInFlight(const SimSwitches& sw,
                                                        const RunOptions& o) {
  return CoordinatorRestartWithGrantInFlight(sw, o, Ms(1));
}

// Control: the same restart 1 s later is safe even without the (1 + eps)
// factor (learning then ends ~0.9 s after a's slots are back).
SimStats CoordinatorRestartOneSecondLater(const SimSwitches& sw, const RunOptions& o) {
  return CoordinatorRestartWithGrantInFlight(sw, o, Sec(1));
}

// eps = 1%; a (clock eps slow) holds its lease when it is cut off at 4.5 s;
// the coordinator (clock eps fast) may free a's share only after
// (D + H)(1 + eps) of silence on its clock; b renews every 20 ms.
SimStats CoordinatorSilenceFactor(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
  c.eps = 0.01;
  c.brokers[kA].clock_ppm = -10000;
  c.coordinator_ppm = 10000;
  c.etcd.member_ppm.assign(3, 10000);
  c.brokers[kB].start_at = Sec(0.5);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.At(Sec(4.5), [&] { sim.Partition(kA, true); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// a may run two DigiScope instances and runs one; L = 13 (pool 10). a is cut
// off at 3 s; after a's silence b gets the whole pool (11 s); the coordinator
// goes down at 11.5 s; a reconnects at 12 s with its lease lapsed and nobody to
// ask; a second DigiScope registers at a at 13 s. With one counter a's actions
// had taken the idle system slot.
SimStats RegistrationWhileLeaseLapsedAndCoordinatorDown(const SimSwitches& sw,
                                                        const RunOptions& o) {
  SimConfig c = Base(sw, o);
  c.limit = 13;
  c.brokers[kA].system_slots = 2;
  Simulation sim(c);
  sim.At(Sec(3.0), [&] {
    sim.Partition(kA, true);
    sim.SetDemand(kB, 10);
  });
  sim.At(Sec(11.5), [&] { sim.CrashCoordinator(); });
  sim.At(Sec(12.0), [&] { sim.Partition(kA, false); });
  sim.At(Sec(13.0), [&] { sim.RegisterClient(kA); });
  return Finish(sim);
}

// a holds its lease (10) when it is stopped (SIGSTOP) at 4.5 s for 20 s: its
// timers do not fire, its clients keep their slots. After a's silence b gets
// the pool (13 s). Only the clients' fence in the slot table takes a's
// capacity back at the lease deadline.
SimStats StoppedBrokerHoldingALease(const SimSwitches& sw, const RunOptions& o) {
  Simulation sim(Base(sw, o));
  sim.At(Sec(4.5), [&] { sim.PauseBroker(kA, Sec(24.5)); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// As above at the drift edge of eps = 1e-3 (a's clock slow, the coordinator's
// fast) with b renewing every 20 ms: a fence 63.5 ms late (the product before
// issue 8) leaves a's slots in use after the coordinator may re-grant them;
// the margin is (2D + H) eps = 14 ms here.
SimStats StoppedBrokerFenceAtTheDriftEdge(const SimSwitches& sw, const RunOptions& o) {
  SimConfig c = Base(sw, o);
  c.brokers[kA].clock_ppm = -1000;
  c.coordinator_ppm = 1000;
  c.etcd.member_ppm.assign(3, 1000);
  // etcd: (D + H)(1 + eps) = 7.988 s rounds to a TTL of 8 s (expired 7.992 s
  // after the keepalive on the leader's fast clock): a 63.5 ms late fence
  // does not fit.
  if (o.etcd) c.drain = milliseconds(1980);
  c.brokers[kB].start_at = Sec(0.5);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.At(Sec(4.5), [&] { sim.PauseBroker(kA, Sec(24.5)); });
  sim.At(Sec(5.0), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

// ---- etcd mode only (issue 13) ----

// a's client talks to etcd member 0, the leader. At 4.1 s the leader is cut
// off from the majority: member 1 is elected at 4.4 s (every lease reset to
// its full TTL from then), while member 0 still answers keepalives from its
// own lessor until 5.1 s. a renews at 5.0 s: its keepalive is answered by the
// deposed leader (full TTL, kept nowhere); its read gets no answer; a is cut
// off at 5.05 s. b wants the pool from 5.0 s and renews every 20 ms. H = 0.5 s.
// The store expires a's live key TTL after the election; a broker that trusts
// its store lease (the answer's TTL, minus H) keeps its grant ~0.6 s past
// that, while B1 on its own clock ends it D(1 - eps) after t_sent (4.0 s).
SimStats DeposedLeaderAnswersKeepAlive(const SimSwitches& sw, const RunOptions& o) {
  RunOptions etcd = o;
  etcd.etcd = true;
  SimConfig c = Base(sw, etcd);
  c.drain = milliseconds(500);
  c.brokers[kB].renew_interval = milliseconds(20);
  Simulation sim(c);
  sim.At(Sec(4.1), [&] { sim.LeaderChange(Ms(300), Sec(1)); });
  sim.At(Sec(5.0), [&] {
    sim.SetDemand(kB, 10);
    sim.ForceRenew(kA);
  });
  sim.At(Sec(5.05), [&] { sim.Partition(kA, true); });
  return Finish(sim);
}

// CoordinatorRestart20msAfterGrant's etcd form: the store's data is lost 20 ms
// after a's transaction recorded its grant (the cluster rebuilt empty). The
// ledger is created again from nothing; it must learn (C3: the learning key
// on a store lease of (D + H)(1 + eps)) before it grants b what a still uses.
SimStats StoreWipedAfterGrant(const SimSwitches& sw, const RunOptions& o) {
  RunOptions etcd = o;
  etcd.etcd = true;
  Simulation sim(Base(sw, etcd));
  sim.At(Sec(2.021), [&] { sim.WipeStore(); });
  sim.At(Sec(2.5), [&] { sim.SetDemand(kB, 10); });
  return Finish(sim);
}

}  // namespace

EpochResult EpochBackwardsAfterRestart(EpochSource source, bool verbose) {
  SimConfig c = Base(SimSwitches{}, RunOptions{verbose, false});
  c.epoch_source = source;
  c.brokers[kB].demand = 10;
  c.early_renew = true;
  c.run_for = Sec(40);
  Simulation sim(c);
  constexpr RealTime kRestart = Sec(6.0);
  sim.At(Sec(5.0), [&] { sim.StepWallClock(kA, -Sec(60)); });
  sim.At(Sec(5.5), [&] { sim.CrashBroker(kA); });
  sim.At(kRestart, [&] {
    sim.RestartBroker(kA);
    sim.SetDemand(kA, 10);
  });
  auto regained = std::make_shared<RealTime>(kNever);
  auto epochs = std::make_shared<std::pair<std::uint64_t, std::uint64_t>>();
  sim.At(Sec(5.4), [&sim, epochs] { epochs->first = sim.epoch(kA); });
  sim.At(Sec(6.1), [&sim, epochs] { epochs->second = sim.epoch(kA); });
  for (RealTime t = kRestart; t <= c.run_for; t += Ms(100)) {
    sim.At(t, [&sim, regained] {
      if (*regained == kNever && sim.lease(kA) > 0) *regained = sim.now();
    });
  }
  sim.Run();
  EpochResult r;
  r.stats = sim.stats();
  const double silence =
      static_cast<double>((c.term + c.drain).count()) * (1 + c.eps) / 1e9;
  const double bound = silence + static_cast<double>(c.term.count()) / 1e9;
  char buf[300];
  std::snprintf(buf, sizeof buf,
                "epoch before %llu, after the restart %llu (%s); a holds a lease again %s%.2f s "
                "after the restart (bound %.2f s); S violations %llu",
                static_cast<unsigned long long>(epochs->first),
                static_cast<unsigned long long>(epochs->second),
                epochs->second > epochs->first ? "newer" : "OLDER",
                *regained == kNever ? "never (the run ends) " : "",
                static_cast<double>((*regained == kNever ? c.run_for : *regained) - kRestart) /
                    1e9,
                bound, static_cast<unsigned long long>(r.stats.s_violations));
  r.figures = buf;
  if (r.stats.s_violations != 0) {
    r.failed = "KeepsS failed: " + r.figures + "; " + r.stats.first_violation;
  } else if (*regained == kNever ||
             static_cast<double>(*regained - kRestart) / 1e9 > bound) {
    r.failed = "RegainsItsShareAfterTheRestart failed: " + r.figures;
  }
  return r;
}

namespace {

// ---- server model (DESIGN section 8, issue 7) ----

// Three brokers (one system slot each, floor 0), 8 action threads each, short
// actions (10-100 ms) back to back; D = 6 s, H = 2 s; network 1 ms, no loss.
// The server refuses at C; a refused thread backs off 50 ms.
SimConfig ServerBase(std::uint32_t limit, std::uint32_t cap, const ServerOptions& o) {
  SimConfig c;
  c.limit = limit;
  c.brokers.resize(3);
  for (std::size_t i = 0; i < c.brokers.size(); ++i) {
    c.brokers[i].demand = 8;
    c.brokers[i].start_at = Ms(100 * static_cast<std::int64_t>(i));
  }
  c.term = seconds(6);
  c.drain = seconds(2);
  c.adversarial_clients = false;
  c.session_min = Ms(10);
  c.session_max = Ms(100);
  c.run_for = Sec(60);
  c.verbose = o.verbose;
  c.server.enabled = true;
  c.server.cap = cap;
  c.server.ratchet = o.ratchet;
  c.server.hold_after_refusal = o.hold_after_refusal;
  c.server.report_horizon = o.report_horizon;
  return c;
}

}  // namespace

std::string Figures(const SimStats& st) {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "limit %u (min %u, %llu changes), C %u, refusals %llu (evidence %llu, until "
                "convergence %llu, after %llu, by lag %llu), converged at %.2f s, server "
                "utilization %.3f, mean limit %.2f, S violations %llu",
                st.limit, st.min_limit, static_cast<unsigned long long>(st.limit_changes), st.cap,
                static_cast<unsigned long long>(st.refusals),
                static_cast<unsigned long long>(st.evidence),
                static_cast<unsigned long long>(st.refusals_until_convergence),
                static_cast<unsigned long long>(st.refusals_after_convergence),
                static_cast<unsigned long long>(st.refusals_by_lag), st.converged_at,
                st.server_utilization, st.mean_limit,
                static_cast<unsigned long long>(st.s_violations));
  return buf;
}

namespace {

std::string Fail(const char* check, const SimStats& st) {
  return std::string(check) + " failed: " + Figures(st);
}

std::string CommonChecks(const SimStats& st) {
  if (st.s_violations != 0) return Fail("SAgainstLMinusR", st) + "; " + st.first_violation;
  if (st.max_over_grant != 0) return Fail("NoOverGrant", st);
  if (st.real_cap_violations != 0) {
    return Fail("SAgainstRealCapAfterConvergence", st) + "; " + st.first_real_violation;
  }
  if (st.limit_below_cap_violations != 0) {
    return Fail("LimitNeverBelowCapMinusOtherTools", st) + "; " + st.first_real_violation;
  }
  return "";
}

// L = 20 configured, the server's cap C = 12, three brokers busy: the limit
// converges from above to exactly 12 and the refusals stop.
SimStats DiscoveryConvergesFromAbove(const ServerOptions& o) {
  Simulation sim(ServerBase(20, 12, o));
  return Finish(sim);
}

// Converged as defined in SimStats; rule F2's bound on the refusals that were
// evidence (estimate below the limit). The total is NOT bounded by 2 x (20 -
// 12): while the limit is 13 and the others' owed still carries grants in
// flight, each busy thread's retry is refused again (see docs/notes.md).
std::string CheckConverges(const SimStats& st) {
  if (auto e = CommonChecks(st); !e.empty()) return e;
  if (st.limit != 12 || st.min_limit != 12) return Fail("ConvergesToTheCapNeverBelow", st);
  if (st.converged_at < 0 || st.converged_at > 30) return Fail("ConvergesWithin30s", st);
  if (st.evidence > 2 * (20 - 12)) return Fail("AtMostTwiceTheGapInEvidence", st);
  if (st.refusals_after_convergence != 0) return Fail("NoRefusalAfterConvergence", st);
  return "";
}

// The same with the broker-side back-pressure (hold_after_refusal): the
// refused broker stops at what it holds until its next grant.
SimStats DiscoveryWithHoldAfterRefusal(const ServerOptions& o) {
  ServerOptions with = o;
  with.hold_after_refusal = true;
  Simulation sim(ServerBase(20, 12, with));
  return Finish(sim);
}

std::string CheckConvergesInFewRefusals(const SimStats& st) {
  if (auto e = CheckConverges(st); !e.empty()) return e;
  if (st.refusals > 2 * (20 - 12)) return Fail("AtMostTwiceTheGapInAll", st);
  return "";
}

// As above, but the first three refusal reports are lost on the network.
SimStats LostRefusalReport(const ServerOptions& o) {
  Simulation sim(ServerBase(20, 12, o));
  auto lost = std::make_shared<int>(0);
  sim.SetNetworkHook([lost](const MsgInfo& m, RealTime) -> std::optional<Fate> {
    if (m.kind == MsgInfo::kRefusal && *lost < 3) {
      ++*lost;
      return Fate{true, {}};
    }
    return std::nullopt;
  });
  return Finish(sim);
}

std::string CheckLostReport(const SimStats& st) {
  if (st.reports_lost != 3) return Fail("ThreeReportsLost", st);
  return CheckConverges(st);
}

// C = L = 12, three brokers with 3 action threads each (the pool of 9,
// exactly). Every 15 s (wider than the 10 s window) another tool briefly
// holds 6 sessions while dsb's demand is low (one thread per broker), and one
// DigiScope thread asks for a slot meanwhile: one refusal per episode, at a
// held level well below the cap. Rule F2 never lowers on these isolated
// refusals: the limit stays at C. The ratchet switch lowers it on every one.
SimStats TransientOtherToolDoesNotRatchet(const ServerOptions& o) {
  SimConfig c = ServerBase(12, 12, o);
  for (auto& b : c.brokers) b.demand = 3;
  c.session_min = Ms(200);
  c.session_max = Ms(1000);
  c.server.window = seconds(10);
  c.server.refusal_backoff = Ms(1000);  // longer than the tool's hold: one refusal per episode
  c.run_for = Sec(130);
  Simulation sim(c);
  for (int k = 0; k < 8; ++k) {
    const RealTime t = Sec(5) + k * Sec(15);
    sim.At(t, [&sim] {
      for (int b = 0; b < 3; ++b) sim.SetDemand(b, 1);
    });
    sim.At(t + Ms(1), [&sim] { sim.OtherToolSession(6, Ms(300)); });
    sim.At(t + Ms(2), [&sim] { sim.SetDemand(0, 2); });
    sim.At(t + Ms(500), [&sim] {
      for (int b = 0; b < 3; ++b) sim.SetDemand(b, 3);
    });
  }
  return Finish(sim);
}

// C = L = 12, three brokers busy with short actions; once, another tool holds
// 2 sessions for 400 ms. Its burst of refusals lowers the limit, provisionally
// (F2a): after the probation (60 s) without a refusal the limit comes back to
// 12. With probation 0 (the switch) the lowering is final.
SimStats OneBurstLowersOnlyForAProbation(const ServerOptions& o) {
  SimConfig c = ServerBase(12, 12, o);
  c.server.window = seconds(10);
  if (o.no_probation) c.server.probation = Duration::zero();
  c.run_for = Sec(160);
  Simulation sim(c);
  // Demand dips (room on the server), the tool takes 2 sessions for 50 ms,
  // demand comes back at once: dsb's threads are refused while it holds them.
  sim.At(Sec(10), [&sim] {
    for (int b = 0; b < 3; ++b) sim.SetDemand(b, 2);
  });
  sim.At(Sec(10.3), [&sim] { sim.OtherToolSession(2, Ms(400)); });
  sim.At(Sec(10.301), [&sim] {
    for (int b = 0; b < 3; ++b) sim.SetDemand(b, 8);
  });
  return Finish(sim);
}

std::string CheckProbation(const SimStats& st) {
  if (st.s_violations != 0) return Fail("SAgainstLMinusR", st);
  if (st.min_limit >= st.cap) return Fail("TheBurstLoweredTheLimit", st);
  if (st.limit != st.cap) return Fail("ProvisionalLoweringComesBack", st);
  return "";
}

std::string CheckNoRatchet(const SimStats& st) {
  if (st.s_violations != 0) return Fail("SAgainstLMinusR", st);
  if (st.min_limit != st.cap) return Fail("LimitStaysAtTheCapUnderIsolatedRefusals", st);
  if (st.refusals < 8) return Fail("OneRefusalPerEpisode", st);
  return "";
}

// C = L = 12, three brokers busy with short actions; the server counts a closed
// session 5 ms longer. The slot is handed out again at once.
SimConfig CloseLag(const ServerOptions& o, ServerSpec::Close close, RealTime cooldown) {
  SimConfig c = ServerBase(12, 12, o);
  c.server.close = close;
  c.server.close_lag = Ms(5);
  c.server.cooldown = cooldown;
  return c;
}

SimStats CloseLagWithoutCooldownRefuses(const ServerOptions& o) {
  Simulation sim(CloseLag(o, ServerSpec::Close::kImmediate, 0));
  return Finish(sim);
}

// The refusals come while dsb's slot tables hold < C, and feedback reads them
// as a lower limit (DESIGN section 8): the limit falls below C.
std::string CheckLagRefuses(const SimStats& st) {
  if (st.s_violations != 0) return Fail("SAgainstLMinusR", st);
  if (st.refusals_by_lag == 0) return Fail("RefusalsAtHeldBelowTheCap", st);
  if (st.min_limit >= st.cap) return Fail("FeedbackReadsLagAsALowerLimit", st);
  return "";
}

SimStats CloseLagWithCooldownDoesNot(const ServerOptions& o) {
  Simulation sim(CloseLag(o, ServerSpec::Close::kCooldown, Ms(5)));
  return Finish(sim);
}

SimStats CloseLagWithConfirmedCloseDoesNot(const ServerOptions& o) {
  Simulation sim(CloseLag(o, ServerSpec::Close::kConfirmed, 0));
  return Finish(sim);
}

std::string CheckNoRefusal(const SimStats& st) {
  if (auto e = CommonChecks(st); !e.empty()) return e;
  if (st.refusals != 0) return Fail("NoRefusal", st);
  if (st.min_limit != st.cap) return Fail("LimitStaysAtTheCap", st);
  return "";
}

}  // namespace

std::string CheckServerRun(const SimStats& st) { return CommonChecks(st); }

const std::vector<ServerScenario>& ServerScenarios() {
  static const std::vector<ServerScenario> all = {
      {"DiscoveryConvergesFromAbove",
       "L = 20, C = 12, 3 brokers busy: the limit converges to 12, then no refusal",
       &DiscoveryConvergesFromAbove, &CheckConverges, false},
      {"DiscoveryWithHoldAfterRefusal",
       "as above with hold_after_refusal: at most 2 x (20 - 12) refusals in all",
       &DiscoveryWithHoldAfterRefusal, &CheckConvergesInFewRefusals, false},
      {"LostRefusalReport", "as above with the first 3 refusal reports lost: still converges",
       &LostRefusalReport, &CheckLostReport, false},
      {"TransientOtherToolDoesNotRatchet",
       "C = L = 12, another tool briefly holds 6 sessions every 15 s (window 10 s): one "
       "refusal each time, the limit stays 12; the ratchet switch lowers it",
       &TransientOtherToolDoesNotRatchet, &CheckNoRatchet, true},
      {"OneBurstLowersOnlyForAProbation",
       "C = L = 12, busy; another tool holds 2 sessions for 400 ms once: the limit falls, then "
       "comes back to 12 after the 60 s probation (rule F2a)",
       &OneBurstLowersOnlyForAProbation, &CheckProbation, false},
      {"CloseLagWithoutCooldownRefuses",
       "C = L = 12, close lag 5 ms, slot reused at once: refusals while dsb held < C, "
       "and discovery lowers the limit below C",
       &CloseLagWithoutCooldownRefuses, &CheckLagRefuses, false},
      {"CloseLagWithCooldownDoesNot", "the same with release_cooldown = 5 ms: no refusal",
       &CloseLagWithCooldownDoesNot, &CheckNoRefusal, false},
      {"CloseLagWithConfirmedCloseDoesNot",
       "the same with the close confirmed before the release: no refusal",
       &CloseLagWithConfirmedCloseDoesNot, &CheckNoRefusal, false},
  };
  return all;
}

SimConfig RandomServerConfig(std::uint64_t seed, int brokers, RealTime run_for, bool faults) {
  SimConfig c = RandomConfig(seed, brokers, run_for, faults);
  // The estimate assumes a refusal report arrives within its horizon (D in
  // this sweep): delays past D, stopped processes and degraded links break
  // that assumption (a late report may lower the limit below C, see
  // docs/notes.md), so this sweep leaves them to the lease-only sweep.
  c.net.late = 0;
  c.faults.broker_pause_every = 0;
  c.faults.coordinator_pause_every = 0;
  c.faults.slow_link_every = 0;
  std::mt19937_64 rng(seed * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull);
  auto below = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  ServerSpec& sv = c.server;
  sv.enabled = true;
  std::uint32_t reserved = c.reserve;
  for (const auto& b : c.brokers) reserved += b.system_slots + b.floor;
  // C in [minimum, L]: a cap below the minimum is a misconfiguration that no
  // limit can serve (DESIGN section 8: never below sum(system_slots + floor) + 1).
  sv.cap = reserved + 1 + static_cast<std::uint32_t>(below(c.limit - reserved));
  switch (below(3)) {
    case 0:
      sv.close = ServerSpec::Close::kImmediate;
      sv.close_lag = 0;
      break;
    case 1:
      sv.close = ServerSpec::Close::kConfirmed;
      sv.close_lag = Ms(1) + static_cast<RealTime>(below(static_cast<std::uint64_t>(Ms(20))));
      break;
    default:
      sv.close = ServerSpec::Close::kCooldown;
      sv.close_lag = Ms(1) + static_cast<RealTime>(below(static_cast<std::uint64_t>(Ms(20))));
      sv.cooldown = sv.close_lag + static_cast<RealTime>(below(static_cast<std::uint64_t>(Ms(10))));
      break;
  }
  sv.refusal_backoff = Ms(10) + static_cast<RealTime>(below(static_cast<std::uint64_t>(Ms(200))));
  sv.think = below(2) == 0 ? 0 : static_cast<RealTime>(below(static_cast<std::uint64_t>(Ms(100))));
  if (below(2) == 0) {
    sv.other_every = 2 + static_cast<double>(below(10));
    sv.other_max_sessions = 1 + static_cast<std::uint32_t>(below(3));
    sv.other_hold_min = Ms(5);
    sv.other_hold_max = Ms(10) + static_cast<RealTime>(below(static_cast<std::uint64_t>(Ms(500))));
  }
  sv.window = seconds(1 + static_cast<std::int64_t>(below(60)));
  sv.confirmations = 2;
  return c;
}

const std::vector<Scenario>& Scenarios() {
  static const std::vector<Scenario> all = {
      {"ShrinkGrantDelayedWhileHeldZeroReported", "C1 owed counts unacknowledged grants",
       [](SimSwitches& s) { s.protocol.c1_owed_counts_unacked_grants = false; },
       &ShrinkGrantDelayedWhileHeldZeroReported, false, EtcdFit::kBreaks,
       "the grant's delay is its transaction's answer's; the store client re-reads after D/12 and "
       "gets the stored reply"},
      {"LostShrinkGrant", "C1 owed counts unacknowledged grants",
       [](SimSwitches& s) { s.protocol.c1_owed_counts_unacked_grants = false; }, &LostShrinkGrant,
       false, EtcdFit::kBreaks,
       "the lost grant is the lost answer of the transaction that recorded it"},
      {"ReorderedOlderReport", "Requests: a stale request changes nothing",
       [](SimSwitches& s) { s.protocol.request_staleness = false; }, &ReorderedOlderReport, false,
       EtcdFit::kKeepsOnly,
       "a broker's requests reach the ledger only through its own store client, one renew at a "
       "time in request order, and a step computed from an old read fails its compare "
       "(mod_revision): no older request is applied after a newer one (the script's delayed "
       "coordinator-bound request does not exist)"},
      {"ResentRequest", "B1 lease counts from the first send",
       [](SimSwitches& s) { s.protocol.b1_first_t_sent = false; }, &ResentRequest, false,
       EtcdFit::kBreaks,
       "its own etcd form (ResentRequestEtcd): the read's and the transaction's answers slow, so "
       "the grant arrives after a resend"},
      {"OldGrantAfterNewerOnes", "B1a request id must exceed the applied one",
       [](SimSwitches& s) { s.protocol.b1a_order = false; }, &OldGrantAfterNewerOnes, false,
       EtcdFit::kKeepsOnly,
       "the store client takes only the answer to its current call (within D/12), renews in "
       "request order: an older grant never arrives after a newer one"},
      {"PreviousEpochGrantAfterRestart", "B1a epoch must be ours",
       [](SimSwitches& s) { s.protocol.b1a_epoch = false; }, &PreviousEpochGrantAfterRestart, false,
       EtcdFit::kKeepsOnly,
       "a restarted broker is a new process: its store client never receives answers to its "
       "predecessor's calls, so no grant of an older epoch reaches the new agent"},
      {"RevokeNoticeLost", "C2 revoke does not lower owed",
       [](SimSwitches& s) { s.protocol.c2_revoke_keeps_owed = false; }, &RevokeNoticeLost, false,
       EtcdFit::kBreaks,
       "the revoke is an admin transaction (ApplyAdmin); the lost notice is the watch's renew-now"},
      {"ClockEdgeWhileCutOff", "B1 lease ends at D(1 - eps)",
       [](SimSwitches& s) { s.protocol.b1_eps_margin = false; }, &ClockEdgeWhileCutOff, false,
       EtcdFit::kBreaks,
       "the store leader's clock is the coordinator's (fast at the eps edge); H = 1.9 s so that "
       "etcd's whole-second TTL (8 s) has little slack"},
      {"CoordinatorRestart20msAfterGrant", "C3 learning mode",
       [](SimSwitches& s) { s.protocol.c3_learning = false; }, &CoordinatorRestart20msAfterGrant,
       false, EtcdFit::kKeepsOnly,
       "the coordinator's restart is a store leader change: the ledger survives in the store and "
       "there is nothing to learn; C3's etcd form is StoreWipedAfterGrant"},
      {"SecondDigiScopeWhileActionsFillLease", "B1 two counters",
       [](SimSwitches& s) { s.protocol.b1_two_counters = false; },
       &SecondDigiScopeWhileActionsFillLease, false, EtcdFit::kBreaks, "as is"},
      {"HeldAndAppliedReadApart", "B2 held and applied read at one instant",
       [](SimSwitches& s) { s.protocol.b2_one_instant = false; }, &HeldAndAppliedReadApart, false,
       EtcdFit::kBreaks, "as is (the delayed grant is the transaction's answer)"},
      {"GrantDelayedPastD", "B1 lease counts from the first send",
       [](SimSwitches& s) { s.protocol.b1_first_t_sent = false; }, &GrantDelayedPastD, false,
       EtcdFit::kKeepsOnly,
       "a grant reaches the agent only as the answer to the store client's current call, within "
       "the renew's D/3 budget, never past D; B1's first send is shown in etcd mode by "
       "ResentRequest's etcd form"},
      {"RequestDelayedPastDPlusH", "Requests: a stale request changes nothing",
       [](SimSwitches& s) { s.protocol.request_staleness = false; }, &RequestDelayedPastDPlusH,
       false, EtcdFit::kKeepsOnly,
       "as ReorderedOlderReport: the store's compare-and-swap and the one-renew-at-a-time client "
       "leave no late request to apply"},
      {"CoordinatorRestartAtDriftEdgeWithGrantInFlight",
       "C2/C3 silence and learning are (D + H)(1 + eps)",
       [](SimSwitches& s) { s.protocol.c2_silence_eps = false; },
       &CoordinatorRestartAtDriftEdgeWithGrantInFlight, false, EtcdFit::kBreaks,
       "the restart is a store leader change (every TTL reset) 1 ms after the transaction's "
       "answer; the TTL is on the new leader's fast clock"},
      {"CoordinatorRestartOneSecondLater", "C2/C3 silence and learning are (D + H)(1 + eps)",
       [](SimSwitches& s) { s.protocol.c2_silence_eps = false; }, &CoordinatorRestartOneSecondLater,
       /*control=*/true, EtcdFit::kBreaks,
       "the restart is a leader change (every TTL reset) 1 s after the transaction's answer"},
      {"CoordinatorSilenceFactor", "C2/C3 silence and learning are (D + H)(1 + eps)",
       [](SimSwitches& s) { s.protocol.c2_silence_eps = false; }, &CoordinatorSilenceFactor, false,
       EtcdFit::kBreaks,
       "the silence is the store lease's TTL on the leader's clock (fast at the eps edge): ceil(D "
       "+ H) = 8 s instead of ceil((D + H)(1 + eps)) = 9 s"},
      {"RegistrationWhileLeaseLapsedAndCoordinatorDown", "B1 two counters",
       [](SimSwitches& s) { s.protocol.b1_two_counters = false; },
       &RegistrationWhileLeaseLapsedAndCoordinatorDown, false, EtcdFit::kBreaks,
       "the coordinator down is the store without a leader (nothing written, nothing expires)"},
      {"StoppedBrokerHoldingALease", "glue: clients fence the slot table at the lease deadline",
       [](SimSwitches& s) { s.glue.client_fence = false; }, &StoppedBrokerHoldingALease, false,
       EtcdFit::kBreaks,
       "as is: the store expires the stopped broker's live key a TTL after its last keepalive"},
      {"StoppedBrokerFenceAtTheDriftEdge",
       "glue: the fence applies at the deadline, not 63.5 ms later",
       [](SimSwitches& s) { s.glue.fence_on_time = false; }, &StoppedBrokerFenceAtTheDriftEdge,
       false, EtcdFit::kBreaks,
       "members' clocks fast at the eps edge; H = 1.98 s so that the whole-second TTL (8 s) has "
       "little slack"},
      {"DeposedLeaderAnswersKeepAlive",
       "B1 in etcd mode: the lease counts on the broker's own clock, never the store's lease",
       [](SimSwitches& s) { s.etcd.b1_own_clock = false; }, &DeposedLeaderAnswersKeepAlive, false,
       EtcdFit::kEtcdOnly, "a leader change with the deposed leader answering keepalives"},
      {"StoreWipedAfterGrant", "C3 learning mode (the learning key)",
       [](SimSwitches& s) { s.protocol.c3_learning = false; }, &StoreWipedAfterGrant, false,
       EtcdFit::kEtcdOnly, "CoordinatorRestart20msAfterGrant with the store's data lost"},
  };
  return all;
}

const std::vector<SwitchInfo>& AllSwitches() {
  static const std::vector<SwitchInfo> all = {
      {"c1", "C1 owed counts unacknowledged grants",
       [](SimSwitches& s) { s.protocol.c1_owed_counts_unacked_grants = false; }},
      {"c2", "C2 revoke does not lower owed",
       [](SimSwitches& s) { s.protocol.c2_revoke_keeps_owed = false; }},
      {"c2-silence-eps", "C2/C3 silence and learning are (D + H)(1 + eps)",
       [](SimSwitches& s) { s.protocol.c2_silence_eps = false; }},
      {"c3", "C3 learning mode", [](SimSwitches& s) { s.protocol.c3_learning = false; }},
      {"b1-first-send", "B1 lease counts from the first send",
       [](SimSwitches& s) { s.protocol.b1_first_t_sent = false; }},
      {"b1-eps", "B1 lease ends at D(1 - eps)",
       [](SimSwitches& s) { s.protocol.b1_eps_margin = false; }},
      {"b1-two-counters", "B1 two counters",
       [](SimSwitches& s) { s.protocol.b1_two_counters = false; }},
      {"b1a-order", "B1a request id must exceed the applied one",
       [](SimSwitches& s) { s.protocol.b1a_order = false; }, true, /*etcd=*/false},
      {"b1a-epoch", "B1a epoch must be ours", [](SimSwitches& s) { s.protocol.b1a_epoch = false; },
       true, /*etcd=*/false},
      {"b2", "B2 held and applied read at one instant",
       [](SimSwitches& s) { s.protocol.b2_one_instant = false; }},
      {"staleness", "Requests: a stale request changes nothing",
       [](SimSwitches& s) { s.protocol.request_staleness = false; }, true, /*etcd=*/false},
      {"fence", "glue: clients fence the slot table at the lease deadline",
       [](SimSwitches& s) { s.glue.client_fence = false; }},
      {"fence-on-time", "glue: the fence applies at the deadline, not 63.5 ms later",
       [](SimSwitches& s) { s.glue.fence_on_time = false; }},
      {"b1-own-clock",
       "B1 in etcd mode: the lease counts on the broker's own clock, never the store's lease",
       [](SimSwitches& s) { s.etcd.b1_own_clock = false; }, /*embedded=*/false},
  };
  return all;
}

const SwitchInfo* FindSwitch(const std::string& name) {
  for (const auto& s : AllSwitches()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

CatchRow CatchSwitch(const SwitchInfo& sw, std::uint64_t first, std::uint64_t seeds,
                     RealTime run_for, bool stop_at_first, bool etcd) {
  CatchRow row;
  row.name = sw.name;
  SimSwitches off;
  sw.turn_off(off);
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    SimConfig c = etcd ? EtcdMixedConfig(seed, run_for) : MixedConfig(seed, run_for);
    c.switches = off.protocol;
    c.glue = off.glue;
    c.etcd_switches = off.etcd;
    Simulation sim(c);
    sim.Run();
    const SimStats& st = sim.stats();
    ++row.seeds_run;
    row.events += st.events;
    if (st.max_over_grant > 0) ++row.over_granted;
    if (st.s_violations > 0) {
      if (row.s_broken++ == 0) row.first_failing = seed;
      if (stop_at_first) break;
    }
  }
  row.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return row;
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
    // Messages may be delayed up to D here: the sweep checks the estimate
    // under its assumption that a report arrives within the horizon, so the
    // horizon is D (the product uses min(D/4, 250 ms): a report later than
    // that may set the limit below C; docs/notes.md has the figures).
    c.server.report_horizon = c.term;
    c.faults.partition_every = 5 + 15 * uniform();
    c.faults.broker_crash_every = 10 + 30 * uniform();
    c.faults.coordinator_crash_every = 20 + 60 * uniform();
    c.faults.revoke_every = 15 + 45 * uniform();
    // Issue 8: no blind spots. Delays past D (and past D + H) on half the
    // seeds, one-way partitions, stopped brokers and coordinators (up to 3D),
    // registrations at any time, wall clocks that step (wall-clock epochs on
    // a quarter of the seeds: a stepped clock may make a restarted broker's
    // epoch older, which costs its share, not S).
    c.net.late = below(2) == 0 ? 0.02 * uniform() : 0;
    c.faults.one_way = true;
    c.faults.broker_pause_every = 10 + 30 * uniform();
    c.faults.coordinator_pause_every = 30 + 60 * uniform();
    c.faults.register_every = 2 + 8 * uniform();
    c.faults.clock_step_every = 10 + 30 * uniform();
    c.faults.slow_link_every = 10 + 30 * uniform();
    c.faults.crash_loop = 0.25;
    c.epoch_source = below(4) == 0 ? EpochSource::kWallClock : EpochSource::kCounter;
    // Edge seeds (one in four): a drift allowance of 1% with every clock at
    // its edge (brokers mostly slow, the coordinator fast), brokers that renew
    // every 20-200 ms (they take capacity the first moment it frees) and
    // adversarial clients. The drift clauses guard windows of (D + H) eps: at
    // eps = 1e-3 a few ms, which random runs almost never hit; at 1% they do.
    if (below(4) == 0) {
      c.eps = 0.01;
      const std::int64_t edge = 10000;
      c.coordinator_ppm = below(4) == 0 ? -edge : edge;
      for (auto& b : c.brokers) {
        b.clock_ppm = below(4) == 0 ? edge : -edge;
        if (below(3) == 0) {
          b.renew_interval = milliseconds(20 + static_cast<std::int64_t>(below(180)));
        }
      }
      c.adversarial_clients = below(2) == 0;
    }
  } else {
    c.net.min_delay = Ms(1);
    c.net.max_delay = Ms(5);
  }
  return c;
}

SimConfig HuntConfig(std::uint64_t seed, RealTime run_for) {
  SimConfig c = RandomConfig(seed, 0, run_for, /*faults=*/true);
  std::mt19937_64 rng(seed * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull);
  auto below = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  // Few brokers, a small pool and demand above it: every slot one broker lets
  // go of is wanted by another at once.
  const std::size_t k = 2 + below(3);
  c.brokers.resize(k);
  std::uint32_t reserved = 0;
  for (auto& b : c.brokers) {
    b.start_at = static_cast<RealTime>(below(static_cast<std::uint64_t>(Sec(1))));
    b.instances = 1 + static_cast<std::uint32_t>(below(b.system_slots));
    reserved += b.system_slots + b.floor;
  }
  const auto pool = static_cast<std::uint32_t>(k) * (1 + static_cast<std::uint32_t>(below(3)));
  c.limit = reserved + pool + c.reserve;
  c.max_demand = 2 * pool + 2;
  for (auto& b : c.brokers) b.demand = c.max_demand;
  c.demand_change_every = below(2) == 0 ? 0 : 2 + 6 * uniform();
  c.adversarial_clients = below(4) != 0;
  // Clocks at the drift edge; eps = 1% on half the seeds.
  c.eps = below(4) != 0 ? 0.01 : 1e-3;
  const auto edge = static_cast<std::int64_t>(c.eps * 1e6);
  c.coordinator_ppm = below(8) == 0 ? -edge : edge;
  for (auto& b : c.brokers) {
    b.clock_ppm = below(8) == 0 ? edge : -edge;
    b.renew_interval = below(2) == 0 ? milliseconds(20 + static_cast<std::int64_t>(below(180)))
                                     : Duration{0};
  }
  // Faults several times as often.
  c.net.late = 0.05 * uniform();
  c.net.long_delay = 0.1 * uniform();
  c.faults.partition_every = 3 + 7 * uniform();
  c.faults.broker_crash_every = 5 + 15 * uniform();
  c.faults.coordinator_crash_every = 10 + 20 * uniform();
  c.faults.revoke_every = 5 + 15 * uniform();
  c.faults.broker_pause_every = 5 + 15 * uniform();
  c.faults.coordinator_pause_every = 15 + 30 * uniform();
  c.faults.register_every = 1 + 4 * uniform();
  c.faults.slow_link_every = 3 + 10 * uniform();
  c.faults.crash_loop = 0.5;
  return c;
}

SimConfig EdgeConfig(std::uint64_t seed, RealTime run_for) {
  SimConfig c = HuntConfig(seed, run_for);
  std::mt19937_64 rng(seed * 0x9FB21C651E98DF25ull + 0xC2B2AE3D27D4EB4Full);
  auto below = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  // Two or three brokers; one of them renews every 20 ms (it takes capacity
  // the moment it frees), the others at D/3 (so they resend, B1). Every clock
  // at its edge of eps = 1%, adversarial clients, and brokers that fall silent
  // often (stopped, cut off one way, degraded links).
  c.brokers.resize(2 + below(2));
  c.eps = 0.01;
  c.coordinator_ppm = 10000;
  std::uint32_t reserved = 0;
  for (auto& b : c.brokers) {
    b.clock_ppm = -10000;
    b.renew_interval = Duration{0};
    b.start_at = static_cast<RealTime>(below(static_cast<std::uint64_t>(Sec(1))));
    b.instances = 1 + static_cast<std::uint32_t>(below(b.system_slots));
    reserved += b.system_slots + b.floor;
  }
  c.brokers[below(c.brokers.size())].renew_interval = milliseconds(20);
  const auto pool = static_cast<std::uint32_t>(c.brokers.size()) * 3;
  c.limit = reserved + pool + c.reserve;
  c.max_demand = 2 * pool + 2;
  for (auto& b : c.brokers) b.demand = c.max_demand;
  // Half the seeds: demand jumps between 0 and above the pool every 1-3 s
  // (a report of held 0 followed by full use, B2). Half without early renew
  // (requests are then resent, B1's first send).
  c.demand_change_every = below(2) == 0 ? 0 : 1 + 2 * uniform();
  c.demand_bursts = true;
  c.early_renew = below(2) == 0;
  c.adversarial_clients = true;
  c.term = seconds(3);
  c.net.loss = 0.02 * uniform();
  c.net.late = 0.01 * uniform();
  if (below(2) == 0) {
    // A noisier network on half: more reordering, late and duplicated messages.
    c.net.late = 0.03 * uniform();
    c.net.long_delay = 0.1 * uniform();
    c.net.long_delay_max = c.term.count();
    c.net.duplicate = 0.05 * uniform();
  }
  c.faults = FaultSpec{};
  c.faults.one_way = true;
  c.faults.partition_every = 3 + 3 * uniform();
  c.faults.broker_pause_every = 2 + 3 * uniform();
  c.faults.slow_link_every = 2 + 3 * uniform();
  c.faults.broker_crash_every = 5 + 5 * uniform();
  c.faults.crash_loop = 0.75;
  c.faults.coordinator_crash_every = 20 + 20 * uniform();
  c.faults.register_every = 2 + 4 * uniform();
  return c;
}

SimConfig MixedConfig(std::uint64_t seed, RealTime run_for) {
  if (seed % 2 == 1) return RandomConfig(seed, 0, run_for);
  return seed % 4 == 0 ? HuntConfig(seed, run_for) : EdgeConfig(seed, run_for);
}

SimConfig EtcdMixedConfig(std::uint64_t seed, RealTime run_for) {
  SimConfig c = MixedConfig(seed, run_for);
  std::mt19937_64 rng(seed * 0x94D049BB133111EBull + 0x2545F4914F6CDD1Dull);
  auto below = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  c.etcd.enabled = true;
  // Members' clocks: fast ones at the edge of eps expire leases soonest.
  const auto edge = static_cast<std::int64_t>(c.eps * 1e6);
  c.etcd.member_ppm.clear();
  for (int i = 0; i < 3; ++i) {
    c.etcd.member_ppm.push_back(
        below(2) == 0
            ? edge
            : static_cast<std::int64_t>(below(static_cast<std::uint64_t>(2 * edge + 1))) - edge);
  }
  // etcd's TTLs are whole seconds: ceil((D + H)(1 + eps)) adds up to 1 s of
  // slack to the silence, which hides the drift clauses. On half the seeds H
  // is chosen so that (D + H)(1 + eps) ends 0-50 ms below a whole second.
  if (below(2) == 0) {
    const double d = static_cast<double>(c.term.count()) / 1e9;
    const double h = static_cast<double>(c.drain.count()) / 1e9;
    const double whole = std::ceil((d + h) * (1 + c.eps));
    const double edge_h = (whole - 0.05 * uniform()) / (1 + c.eps) - d;
    if (edge_h > 0.2) c.drain = Duration(static_cast<std::int64_t>(edge_h * 1e9));
  }
  c.etcd.stale_leader_max = below(3) == 0 ? Sec(1) : 0;
  c.etcd.commit_late = uniform();
  // Leader changes (the coordinator's crashes) and quorum losses (its stops).
  if (c.faults.coordinator_crash_every == 0) c.faults.coordinator_crash_every = 10 + 20 * uniform();
  if (c.faults.coordinator_pause_every == 0) c.faults.coordinator_pause_every = 15 + 30 * uniform();
  if (below(4) == 0) c.faults.store_wipe_every = 20 + 40 * uniform();
  // The drift edge in etcd mode (half the EdgeConfig seeds): a fast LAN
  // (0.1-1 ms each way, so the taker's three round trips fit in the D eps
  // window the drift clauses guard), every member's clock fast at eps, and H
  // at a whole-second edge within 10 ms: either (D + H)(1 + eps) just below
  // a whole second (the TTL has no slack: B1's margin, the fence) or D + H
  // just below it (only the (1 + eps) factor rounds the TTL up: C2's factor).
  if (seed % 4 == 2 && below(2) == 0) {
    c.net.min_delay = 100'000;
    c.net.max_delay = 1'000'000;
    c.net.late = 0;
    c.net.long_delay = 0;
    c.etcd.member_ppm.assign(3, edge);
    const double d = static_cast<double>(c.term.count()) / 1e9;
    const double h = static_cast<double>(c.drain.count()) / 1e9;
    const bool factor = below(2) == 0;
    const double whole = std::ceil(factor ? d + h : (d + h) * (1 + c.eps));
    const double edge_h =
        factor ? whole - 0.01 * uniform() - d : (whole - 0.01 * uniform()) / (1 + c.eps) - d;
    if (edge_h > 0.2) c.drain = Duration(static_cast<std::int64_t>(edge_h * 1e9));
  }
  return c;
}

}  // namespace dsb::sim
