#include "broker/lease/ledger.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace dsb::lease {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TimePoint At(std::int64_t ms) { return TimePoint{} + milliseconds(ms); }

LedgerConfig Config(std::uint32_t pool = 10) {
  LedgerConfig c;
  c.targets = {{"exch", pool, pool + 2}};
  c.brokers = {{"a", 1}, {"b", 1}};
  c.term = seconds(15);
  c.drain = seconds(5);
  c.eps = 1e-3;
  c.switches.c3_learning = false;  // most tests start past learning; C3 has its own tests
  return c;
}

RenewRequest Req(const std::string& broker, std::uint64_t epoch, std::uint64_t id,
                 std::uint32_t pool_held, std::uint64_t applied, std::uint32_t wanted) {
  RenewRequest r;
  r.broker_id = broker;
  r.epoch = epoch;
  r.request_id = id;
  r.targets.push_back({"exch", pool_held, applied, pool_held, 0, wanted});
  return r;
}

// The amount granted for "exch", or -1 if no grant / a learning reply.
int Amount(const Result<std::optional<Grant>>& r) {
  if (!r.ok() || !r.value() || r.value()->learning) return -1;
  return static_cast<int>(r.value()->targets.at(0).amount);
}

TEST(Ledger, GrantsFairShareOfDemand) {
  Ledger l(Config(), At(0));
  EXPECT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 4))), 4);
  EXPECT_EQ(Amount(l.OnRequest(At(2), Req("b", 1, 1, 0, 0, 20))), 6);
}

TEST(Ledger, NeverGrantsWhatAnotherBrokerIsOwed) {
  Ledger l(Config(), At(0));
  EXPECT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 10))), 10);
  // b's fair share is 5, but a is owed all 10 until it acknowledges a smaller grant.
  EXPECT_EQ(Amount(l.OnRequest(At(2), Req("b", 1, 1, 0, 0, 10))), 0);
  EXPECT_EQ(l.Owed(0, 0, At(2)), 10u);
}

TEST(Ledger, CapacityMovesOnlyAsOwedFalls) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 10))), 10);
  ASSERT_EQ(Amount(l.OnRequest(At(2), Req("b", 1, 1, 0, 0, 10))), 0);
  // a (holding 10 under grant 1) is shrunk to its fair share...
  EXPECT_EQ(Amount(l.OnRequest(At(3), Req("a", 1, 2, 10, 1, 10))), 5);
  EXPECT_EQ(l.Owed(0, 0, At(3)), 10u);  // ...but still owed 10: grant 1 is unacknowledged
  EXPECT_EQ(Amount(l.OnRequest(At(4), Req("b", 1, 2, 0, 0, 10))), 0);
  // a acknowledges grant 2 but still holds 7 (draining).
  EXPECT_EQ(Amount(l.OnRequest(At(5), Req("a", 1, 3, 7, 2, 10))), 5);
  EXPECT_EQ(l.Owed(0, 0, At(5)), 7u);
  EXPECT_EQ(Amount(l.OnRequest(At(6), Req("b", 1, 3, 0, 0, 10))), 3);
  // a drained to its share.
  EXPECT_EQ(Amount(l.OnRequest(At(7), Req("a", 1, 4, 5, 3, 10))), 5);
  // b is owed 3 (its grant 3); fair share 5 fits now.
  EXPECT_EQ(Amount(l.OnRequest(At(8), Req("b", 1, 4, 3, 3, 10))), 5);
}

TEST(Ledger, OwedCountsEveryGrantAtOrAboveApplied) {
  // The shrink-grant-delayed-while-held-0 edge case.
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 10))), 10);
  ASSERT_EQ(Amount(l.OnRequest(At(2), Req("a", 1, 2, 0, 1, 0))), 0);  // shrink, in flight
  // a reports held 0 but has not applied grant 2: grant 1 still counts.
  ASSERT_EQ(Amount(l.OnRequest(At(3), Req("a", 1, 3, 0, 1, 0))), 0);
  EXPECT_EQ(l.Owed(0, 0, At(3)), 10u);
  // Once a reports applied = 2, grant 1 no longer counts.
  ASSERT_EQ(Amount(l.OnRequest(At(4), Req("a", 1, 4, 0, 2, 0))), 0);
  EXPECT_EQ(l.Owed(0, 0, At(4)), 0u);
}

TEST(Ledger, StaleRequestChangesOnlyTheSilenceTimer) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 5, 10, 0, 10))), 10);
  const std::int64_t silence_ms = std::chrono::duration_cast<milliseconds>(l.Silence()).count() + 1;
  // An older report claiming held 0 and applied 5 would lower owed; it must not.
  auto stale = l.OnRequest(At(2000), Req("a", 1, 4, 0, 5, 0));
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale.value().has_value());
  EXPECT_EQ(l.Owed(0, 0, At(2000)), 10u);
  // It did move the silence timer: owed survives past silence counted from t=1.
  EXPECT_EQ(l.Owed(0, 0, At(1 + silence_ms)), 10u);
  EXPECT_EQ(l.Owed(0, 0, At(2000 + silence_ms)), 0u);
}

TEST(Ledger, AnEpochOlderThanAKnownOneIsRefusedAndCounted) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 2, 1, 3, 0, 3))), 3);
  // A delayed request of an earlier start (or a copy of an old state_dir).
  auto old = l.OnRequest(At(2), Req("a", 1, 9, 1, 0, 10));
  ASSERT_TRUE(old.ok() && old.value().has_value());
  EXPECT_EQ(old.value()->verdict, Verdict::kRefused);
  EXPECT_EQ(Amount(old), 0);
  EXPECT_EQ(l.Owed(0, 0, At(2)), 4u);  // both counted (R4)
  EXPECT_FALSE(l.TakeWarnings().empty());
}

TEST(Ledger, ExactDuplicateOfNewestGetsTheSameGrantAgain) {
  Ledger l(Config(), At(0));
  auto first = l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 6));
  ASSERT_EQ(Amount(first), 6);
  // Meanwhile b's demand would change a's fair share; the duplicate still gets 6.
  ASSERT_EQ(Amount(l.OnRequest(At(2), Req("b", 1, 1, 0, 0, 10))), 4);
  auto again = l.OnRequest(At(3), Req("a", 1, 1, 0, 0, 6));
  ASSERT_TRUE(again.ok() && again.value().has_value());
  EXPECT_EQ(*again.value(), *first.value());
}

TEST(Ledger, NewInstanceNeverDropsWhatAnOlderInstanceIsOwed) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 7, 0, 0, 10))), 10);
  // Restarted broker: its first report counts the 2 slots still marked. The
  // old instance may still use its grant of 10 (R4): nothing more for anyone.
  ASSERT_EQ(Amount(l.OnRequest(At(2), Req("a", 2, 1, 2, 0, 0))), 0);
  EXPECT_EQ(l.Owed(0, 0, At(2)), 12u);
  EXPECT_EQ(Amount(l.OnRequest(At(3), Req("b", 1, 1, 0, 0, 10))), 0);
  // Once the old instance is silent, only the new one's report counts.
  const TimePoint old_silent = At(1) + l.Silence();
  EXPECT_EQ(l.Owed(0, 0, old_silent), 2u);
}

TEST(Ledger, TwoLiveInstancesOfOneIdAreBothCountedAndLogged) {
  Ledger l(Config(), At(0));
  RenewRequest x = Req("a", 5, 1, 0, 0, 4);
  x.instance = 1;
  RenewRequest y = Req("a", 5, 1, 0, 0, 4);
  y.instance = 2;  // a clone: same epoch counter, another instance
  ASSERT_EQ(Amount(l.OnRequest(At(1), x)), 4);
  ASSERT_EQ(Amount(l.OnRequest(At(2), y)), 4);
  x.request_id = 2;
  x.targets[0].pool_held = 4;
  x.targets[0].applied = 1;
  auto again = l.OnRequest(At(3), x);
  EXPECT_EQ(l.Owed(0, 0, At(3)), 8u);
  bool clone_logged = false;
  for (const auto& w : l.TakeWarnings()) {
    if (w.find("two live instances of broker 'a'") == std::string::npos) continue;
    clone_logged = true;
    // The common cause (a restart soon after a crash) before the rare one (a clone).
    const auto restart = w.find("broker 'a' restarted within the term");
    const auto clone = w.find("a cloned workstation");
    EXPECT_NE(restart, std::string::npos) << w;
    EXPECT_NE(clone, std::string::npos) << w;
    EXPECT_LT(restart, clone) << w;
    EXPECT_NE(w.find("forgotten after 20020 ms of silence"), std::string::npos) << w;
  }
  EXPECT_TRUE(clone_logged);
  ASSERT_TRUE(again.ok() && again.value().has_value());
  EXPECT_NE(again.value()->reason.find("another live instance"), std::string::npos);
  EXPECT_NE(again.value()->reason.find("most likely this broker's previous instance"),
            std::string::npos)
      << again.value()->reason;
}

TEST(Ledger, SilenceOfDPlusHTimesOnePlusEpsForgetsOwed) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(0), Req("a", 1, 1, 0, 0, 10))), 10);
  const auto silence = l.Silence();
  EXPECT_EQ(silence, std::chrono::nanoseconds(20'020'000'000));
  EXPECT_EQ(l.Owed(0, 0, TimePoint{} + silence - std::chrono::nanoseconds(1)), 10u);
  EXPECT_EQ(l.Owed(0, 0, TimePoint{} + silence), 0u);
  EXPECT_EQ(Amount(l.OnRequest(TimePoint{} + silence, Req("b", 1, 1, 0, 0, 10))), 10);
}

TEST(Ledger, RevokeZeroesGrantsButDoesNotLowerOwed) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 10, 0, 10))), 10);
  ASSERT_TRUE(l.Revoke("a", At(2)).ok());
  EXPECT_EQ(l.Owed(0, 0, At(2)), 10u);
  EXPECT_EQ(Amount(l.OnRequest(At(3), Req("b", 1, 1, 0, 0, 10))), 0);
  EXPECT_EQ(Amount(l.OnRequest(At(4), Req("a", 1, 2, 10, 1, 10))), 0);  // told lease 0
  EXPECT_EQ(l.Owed(0, 0, At(4)), 10u);                                  // still holding 10
  EXPECT_EQ(Amount(l.OnRequest(At(5), Req("a", 1, 3, 0, 2, 10))), 0);
  EXPECT_EQ(l.Owed(0, 0, At(5)), 0u);  // acknowledged lease 0 with held 0
  EXPECT_EQ(Amount(l.OnRequest(At(6), Req("b", 1, 2, 0, 1, 10))), 10);
  ASSERT_TRUE(l.Resume("a", At(7)).ok());
  EXPECT_EQ(l.Snapshot(At(7)).targets[0].brokers[0].mode, BrokerMode::kActive);
}

TEST(Ledger, DrainZeroesGrantsButDoesNotLowerOwed) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 4, 0, 4))), 4);
  ASSERT_TRUE(l.Drain("a", At(2)).ok());
  EXPECT_EQ(Amount(l.OnRequest(At(3), Req("a", 1, 2, 4, 1, 4))), 0);
  EXPECT_EQ(l.Owed(0, 0, At(3)), 4u);
}

// Two targets, "exch" and "pg", each with a pool of 10.
RenewRequest Req2(const std::string& broker, std::uint64_t id, std::uint32_t held_exch,
                  std::uint32_t held_pg, std::uint64_t applied, std::uint32_t wanted) {
  RenewRequest r = Req(broker, 1, id, held_exch, applied, wanted);
  r.targets.push_back({"pg", held_pg, applied, held_pg, 0, wanted});
  return r;
}
std::uint32_t AmountFor(const Result<std::optional<Grant>>& r, std::size_t t) {
  EXPECT_TRUE(r.ok() && r.value() && !r.value()->learning);
  return r.ok() && r.value() ? r.value()->targets.at(t).amount : 0xFFFFFFFFu;
}

TEST(Ledger, RevokeOfOneTargetZeroesOnlyItsGrantsAndKeepsItsOwed) {
  LedgerConfig c = Config();
  c.targets.push_back({"pg", 10, 12});
  Ledger l(c, At(0));
  auto g = l.OnRequest(At(1), Req2("a", 1, 0, 0, 0, 10));
  ASSERT_EQ(AmountFor(g, 0), 10u);
  ASSERT_EQ(AmountFor(g, 1), 10u);
  ASSERT_TRUE(l.RevokeTarget("a", "pg", At(2)).ok());
  g = l.OnRequest(At(3), Req2("a", 2, 10, 10, 1, 10));
  EXPECT_EQ(AmountFor(g, 0), 10u);  // exch untouched
  EXPECT_EQ(AmountFor(g, 1), 0u);   // pg: told lease 0
  EXPECT_EQ(l.Owed(0, 1, At(3)), 10u);  // C2: owed falls only by its report
  EXPECT_EQ(AmountFor(l.OnRequest(At(4), Req2("b", 1, 0, 0, 0, 10)), 1), 0u);
  // a acknowledges lease 0 with nothing held on pg: owed falls, b may grow.
  g = l.OnRequest(At(5), Req2("a", 3, 10, 0, 2, 10));
  EXPECT_EQ(AmountFor(g, 1), 0u);
  EXPECT_EQ(l.Owed(0, 1, At(5)), 0u);
  EXPECT_EQ(AmountFor(l.OnRequest(At(6), Req2("b", 2, 0, 0, 1, 10)), 1), 10u);
  const LedgerSnapshot s = l.Snapshot(At(6));
  EXPECT_EQ(s.targets[0].brokers[0].mode, BrokerMode::kActive);
  EXPECT_EQ(s.targets[1].brokers[0].mode, BrokerMode::kRevoked);
  // Resume gives it grants again (once b's owed on pg falls).
  ASSERT_TRUE(l.Resume("a", At(7)).ok());
  EXPECT_EQ(l.Snapshot(At(7)).targets[1].brokers[0].mode, BrokerMode::kActive);
  ASSERT_TRUE(l.OnRequest(At(8), Req2("b", 3, 0, 0, 2, 0)).ok());  // wants nothing now
  ASSERT_TRUE(l.OnRequest(At(8), Req2("b", 4, 0, 0, 3, 0)).ok());  // and acknowledges it
  EXPECT_EQ(AmountFor(l.OnRequest(At(9), Req2("a", 4, 10, 0, 3, 10)), 1), 10u);
}

TEST(Ledger, RevokeOfOneTargetNamesAnUnknownBrokerOrTarget) {
  Ledger l(Config(), At(0));
  EXPECT_EQ(l.RevokeTarget("zz", "exch", At(1)).code(), Errc::kConflict);
  EXPECT_EQ(l.RevokeTarget("a", "nope", At(1)).code(), Errc::kUnknownTarget);
  EXPECT_NE(l.RevokeTarget("a", "nope", At(1)).message().find("'nope'"), std::string::npos);
}

TEST(Ledger, ForceRevokeForgetsOwedAtOnce) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 10, 0, 10))), 10);
  ASSERT_TRUE(l.ForceRevoke("a", At(2)).ok());
  EXPECT_EQ(l.Owed(0, 0, At(2)), 0u);
  EXPECT_EQ(Amount(l.OnRequest(At(3), Req("b", 1, 1, 0, 0, 10))), 10);
}

TEST(Ledger, LoweringThePoolShrinksGrantsButFreesOnlyAsOwedFalls) {
  Ledger l(Config(10), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 6))), 6);
  ASSERT_TRUE(l.SetPool("exch", 4, At(2)).ok());
  EXPECT_EQ(Amount(l.OnRequest(At(3), Req("b", 1, 1, 0, 0, 10))), 0);  // a still owed 6 > 4
  EXPECT_EQ(Amount(l.OnRequest(At(4), Req("a", 1, 2, 6, 1, 6))), 2);   // fair share of 4
  EXPECT_EQ(l.Snapshot(At(4)).targets[0].limit, 6u);                   // L moved with P
  ASSERT_TRUE(l.SetLimit("exch", 12, At(5)).ok());
  EXPECT_EQ(l.Snapshot(At(5)).targets[0].pool, 10u);
  EXPECT_EQ(l.SetLimit("exch", 1, At(5)).code(), Errc::kInvalidArgument);
  EXPECT_EQ(l.SetPool("nope", 1, At(5)).code(), Errc::kUnknownTarget);
}

// DESIGN section 8: the configured limit is the ceiling of every other source
// (S: an operator or a keeper on an older file must not raise it).
TEST(Ledger, NoLimitOrPoolAboveTheConfiguredOne) {
  Ledger l(Config(10), At(0));
  const std::uint32_t configured = l.Snapshot(At(0)).targets[0].limit;
  const Status above = l.SetLimit("exch", configured + 1, At(1));
  EXPECT_EQ(above.code(), Errc::kInvalidArgument);
  EXPECT_NE(above.message().find("ceiling " + std::to_string(configured)), std::string::npos)
      << above.message();
  EXPECT_EQ(l.SetPool("exch", 11, At(1)).code(), Errc::kInvalidArgument);
  ASSERT_TRUE(l.SetLimit("exch", configured - 5, At(2)).ok());
  EXPECT_EQ(l.SetLimit("exch", configured + 1, At(3)).code(), Errc::kInvalidArgument);
  EXPECT_EQ(l.Snapshot(At(3)).targets[0].limit, configured - 5);
  ASSERT_TRUE(l.SetLimit("exch", configured, At(4)).ok());
  EXPECT_EQ(l.Snapshot(At(4)).targets[0].pool, 10u);
}

TEST(Ledger, WeightsSplitThePool) {
  LedgerConfig c = Config(8);
  c.brokers = {{"a", 1}, {"b", 3}};
  Ledger l(c, At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 20))), 8);
  ASSERT_EQ(Amount(l.OnRequest(At(2), Req("b", 1, 1, 0, 0, 20))), 0);
  ASSERT_EQ(Amount(l.OnRequest(At(3), Req("a", 1, 2, 8, 1, 20))), 2);
  ASSERT_EQ(Amount(l.OnRequest(At(4), Req("a", 1, 3, 2, 2, 20))), 2);
  EXPECT_EQ(Amount(l.OnRequest(At(5), Req("b", 1, 2, 0, 1, 20))), 6);
}

TEST(Ledger, LearningModeAnswersNoGrantButRecordsReports) {
  LedgerConfig c = Config();
  c.switches.c3_learning = true;
  Ledger l(c, At(0));
  EXPECT_TRUE(l.Learning(At(0)));
  auto r = l.OnRequest(At(1000), Req("a", 1, 1, 7, 3, 7));
  ASSERT_TRUE(r.ok() && r.value().has_value());
  EXPECT_TRUE(r.value()->learning);
  EXPECT_TRUE(r.value()->targets.empty());
  EXPECT_EQ(l.Owed(0, 0, At(1000)), 7u);
  const LedgerSnapshot s = l.Snapshot(At(1000));
  EXPECT_TRUE(s.learning);
  EXPECT_EQ(s.learning_left, l.Silence() - milliseconds(1000));
  const TimePoint end = TimePoint{} + l.Silence();
  EXPECT_TRUE(l.Learning(end - std::chrono::nanoseconds(1)));
  EXPECT_FALSE(l.Learning(end));
  // After learning, b gets at most what a is not owed.
  EXPECT_EQ(Amount(l.OnRequest(end, Req("b", 1, 1, 0, 0, 10))), 3);
}

TEST(Ledger, UnknownBrokerIsRemovedAndCountedUntilItReportsErased) {
  Ledger l(Config(), At(0));
  RenewRequest z = Req("zed", 1, 1, 2, 0, 1);
  z.targets[0].registered = 1;
  auto r = l.OnRequest(At(1), z);
  ASSERT_TRUE(r.ok() && r.value().has_value());
  EXPECT_EQ(r.value()->verdict, Verdict::kRemoved);
  EXPECT_EQ(Amount(r), 0);
  EXPECT_EQ(l.Revoke("zed", At(1)).code(), Errc::kConflict);
  // It still holds 1 registration and 2 actions: the pool for the others is 10 - 1 - 2.
  EXPECT_EQ(Amount(l.OnRequest(At(2), Req("a", 1, 1, 0, 0, 10))), 7);
  // A report that says "erased" but still holds something keeps it counted.
  z.request_id = 2;
  z.erased = true;
  ASSERT_TRUE(l.OnRequest(At(3), z).ok());
  EXPECT_EQ(l.Snapshot(At(3)).targets[0].brokers.size(), 3u);
  z.request_id = 3;
  z.targets[0] = {"exch", 0, 0, 0, 0, 0, 0};
  ASSERT_TRUE(l.OnRequest(At(4), z).ok());
  EXPECT_EQ(l.Snapshot(At(4)).targets[0].brokers.size(), 2u);
}

LedgerConfig FileConfig() {
  LedgerConfig c = Config(10);
  c.generation = 3;
  c.file_hash = "aaaa";
  // Each broker: 1 system slot and floor 2 (so L - r = 10 + 6 = 16).
  for (auto& b : c.brokers) {
    b.system_slots = {1};
    b.floors = {2};
  }
  return c;
}

RenewRequest FileReq(const std::string& broker, std::uint64_t epoch, std::uint64_t id,
                     std::uint64_t generation, const std::string& hash) {
  RenewRequest r = Req(broker, epoch, id, 0, 0, 0);
  r.generation = generation;
  r.file_hash = hash;
  return r;
}

TEST(Ledger, VerdictsFollowGenerationAndFileHash) {
  Ledger l(FileConfig(), At(0));
  EXPECT_EQ(l.OnRequest(At(1), FileReq("a", 1, 1, 3, "aaaa")).value()->verdict,
            Verdict::kAccepted);
  auto differs = l.OnRequest(At(2), FileReq("b", 1, 1, 3, "bbbb"));
  EXPECT_EQ(differs.value()->verdict, Verdict::kRefused);
  EXPECT_NE(differs.value()->reason.find("differs"), std::string::npos);
  EXPECT_EQ(l.OnRequest(At(3), FileReq("b", 2, 1, 2, "cccc")).value()->verdict,
            Verdict::kRefused);
  EXPECT_EQ(l.gate(), Gate::kOpen);
  // A renew of a newer generation (a staged or mistyped file on one broker)
  // does not stop this coordinator: that instance waits, pending, for the
  // coordinator its file names.
  auto newer = l.OnRequest(At(4), FileReq("b", 3, 1, 4, "dddd"));
  EXPECT_EQ(newer.value()->verdict, Verdict::kPending);
  EXPECT_NE(newer.value()->reason.find("newer"), std::string::npos);
  EXPECT_EQ(l.gate(), Gate::kOpen);
  // R3: the hello of the newer coordinator does (the caller persists the mark).
  l.Supersede(4, "ws9@127.0.0.1:7409");
  auto after = l.OnRequest(At(5), FileReq("a", 1, 2, 3, "aaaa"));
  EXPECT_EQ(after.value()->verdict, Verdict::kSuperseded);
  EXPECT_EQ(after.value()->successor, "ws9@127.0.0.1:7409");
  EXPECT_EQ(Amount(after), -1);
}

TEST(Ledger, AGoodbyeThenARenewIsRefusedAndCountedInFull) {
  Ledger l(FileConfig(), At(0));
  RenewRequest a = FileReq("a", 1, 1, 3, "aaaa");
  a.targets[0].wanted = 10;
  ASSERT_EQ(Amount(l.OnRequest(At(1), a)), 10);
  Goodbye bye{"a", 1, 0, {{"exch", 0, 0, 0}}};
  ASSERT_TRUE(l.OnGoodbye(At(2), bye));
  EXPECT_EQ(l.Snapshot(At(2)).targets[0].pool, 10u);  // a's base (3) still counted
  a.request_id = 2;
  a.targets[0].applied = 1;
  a.targets[0].pool_held = 10;
  auto r = l.OnRequest(At(3), a);
  EXPECT_EQ(r.value()->verdict, Verdict::kRefused);
  EXPECT_EQ(l.Owed(0, 0, At(3)), 10u);
}

TEST(Ledger, ALoweredBrokerIsAcceptedWithoutTheFitTestSoARaiseCanFollow) {
  // Floor 3 moves from a to b with a pool of 1: b's raise waits for a's
  // lowering, and a's lowering must not wait for anything.
  LedgerConfig c = FileConfig();
  c.targets[0].pool = 1;
  c.brokers[0].floors = {0};  // a: lowered in this file (was 3)
  c.brokers[1].floors = {5};  // b: raised (was 2)
  Ledger l(c, At(0));
  l.AdoptRecords({{"a", 1, 5, 2, {"exch"}, {1}, {3}}, {"b", 1, 6, 2, {"exch"}, {1}, {2}}}, At(0));
  EXPECT_EQ(l.OnRequest(At(1), FileReq("b", 2, 1, 3, "aaaa")).value()->verdict, Verdict::kPending);
  EXPECT_EQ(l.OnRequest(At(2), FileReq("a", 2, 1, 3, "aaaa")).value()->verdict, Verdict::kPending)
      << "the old instance of a is still live (restored)";
  const TimePoint later = At(3) + l.Silence();
  EXPECT_EQ(l.OnRequest(later, FileReq("a", 2, 2, 3, "aaaa")).value()->verdict,
            Verdict::kAccepted);
  EXPECT_EQ(l.OnRequest(later, FileReq("b", 2, 2, 3, "aaaa")).value()->verdict,
            Verdict::kAccepted);
}

TEST(Ledger, BasesSurviveInRecords) {
  Ledger l(FileConfig(), At(0));
  l.AdoptRecords({{"a", 1, 5, 3, {"exch"}, {1}, {6}}}, At(0));
  const auto records = l.Records();
  Ledger next(FileConfig(), At(100) + l.Silence());
  next.AdoptRecords(records, At(100) + l.Silence());
  // a's 7 (1 + 6) stays counted although no instance of it is live any more.
  EXPECT_EQ(next.Snapshot(At(100) + 3 * l.Silence()).targets[0].pool, 16u - 7u - 3u);
}

TEST(Ledger, ANewInstanceIsAcceptedOnlyWhenItsAllowanceFits) {
  Ledger l(FileConfig(), At(0));
  RenewRequest a = FileReq("a", 1, 1, 3, "aaaa");
  a.targets[0].wanted = 10;
  ASSERT_EQ(Amount(l.OnRequest(At(1), a)), 10);  // the whole pool (b is not running)
  // b starts: 10 owed + a's 3 + b's 3 = 16 fits... but a's floor slots are
  // counted too, so b waits until a gives some of the pool back.
  RenewRequest b = FileReq("b", 1, 1, 3, "aaaa");
  b.targets[0].wanted = 10;
  b.targets[0].pool_held = 0;
  auto rb = l.OnRequest(At(2), b);
  EXPECT_EQ(rb.value()->verdict, Verdict::kAccepted) << rb.value()->reason;
  // b's allowance is now counted: the pool is 16 - 6 = 10, all owed to a.
  EXPECT_EQ(Amount(rb), 0);
  // Now a restarted a (new epoch) while the old one still owes 10 and holds its
  // allowance: the new instance does not fit and stays pending.
  RenewRequest a2 = FileReq("a", 2, 1, 3, "aaaa");
  auto ra2 = l.OnRequest(At(3), a2);
  EXPECT_EQ(ra2.value()->verdict, Verdict::kPending);
  // The old instance says goodbye, handing over nothing: the new one fits.
  Goodbye bye;
  bye.broker_id = "a";
  bye.epoch = 1;
  bye.targets = {{"exch", 0, 0, 0}};
  EXPECT_TRUE(l.OnGoodbye(At(4), bye));
  a2.request_id = 2;
  EXPECT_EQ(l.OnRequest(At(5), a2).value()->verdict, Verdict::kAccepted);
}

TEST(Ledger, AcceptanceIsRecordedBeforeItIsSentAndRecordsAreAdopted) {
  LedgerConfig c = FileConfig();
  std::vector<AcceptanceRecord> stored;
  bool disk_ok = false;
  c.persist = [&](const std::vector<AcceptanceRecord>& r) {
    if (!disk_ok) return false;
    stored = r;
    return true;
  };
  Ledger l(c, At(0));
  auto r = l.OnRequest(At(1), FileReq("a", 1, 1, 3, "aaaa"));
  EXPECT_EQ(r.value()->verdict, Verdict::kPending);  // could not record it
  disk_ok = true;
  r = l.OnRequest(At(2), FileReq("a", 1, 2, 3, "aaaa"));
  EXPECT_EQ(r.value()->verdict, Verdict::kAccepted);
  // One instance record (a's), and a base record (epoch 0) per broker.
  std::erase_if(stored, [](const AcceptanceRecord& r) { return r.epoch == 0; });
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].broker_id, "a");
  EXPECT_EQ(stored[0].floors, std::vector<std::uint32_t>{2});
  // A successor ledger counts a recorded allowance (here one of an older file
  // with floor 5) for as long as the broker has not reported a newer
  // acceptance, silent or not: its clients keep their sessions.
  stored[0].floors = {5};
  Ledger next(FileConfig(), At(10));
  EXPECT_EQ(next.Snapshot(At(10)).targets[0].pool, 10u);  // 16 - 3 - 3 (the file's)
  next.AdoptRecords(stored, At(10));
  EXPECT_EQ(next.Snapshot(At(10)).targets[0].pool, 7u);   // 16 - 6 - 3
  EXPECT_EQ(next.Snapshot(At(10) + next.Silence()).targets[0].pool, 7u);
  ASSERT_EQ(next.OnRequest(At(20) + next.Silence(), FileReq("a", 2, 1, 3, "aaaa")).value()->verdict,
            Verdict::kAccepted);
  EXPECT_EQ(next.Snapshot(At(20) + next.Silence()).targets[0].pool, 10u);
}

TEST(Ledger, RestoredAcceptancesOfAnotherFileAreRefusedOrRemovedButStayCounted) {
  LedgerConfig c = FileConfig();
  c.brokers.pop_back();  // "b" was removed from the file
  Ledger l(c, At(0));
  const AcceptanceRecord gone{"b", 1, 5, 3, {"exch"}, {1}, {4}};
  const AcceptanceRecord old{"a", 1, 6, 2, {"exch"}, {1}, {2}};
  l.AdoptRecords({gone, old}, At(0));
  // b still counts 1 + 4, a its 3: the pool is 16 - 5 - 3 (room is a's 3 + pool 10 + b's 3).
  RenewRequest rb = FileReq("b", 1, 7, 3, "aaaa");
  rb.instance = 5;
  auto vb = l.OnRequest(At(1), rb);
  EXPECT_EQ(vb.value()->verdict, Verdict::kRemoved);
  RenewRequest ra = FileReq("a", 1, 9, 2, "old");
  ra.instance = 6;
  auto va = l.OnRequest(At(2), ra);
  EXPECT_EQ(va.value()->verdict, Verdict::kRefused);
  // Both recorded allowances go on to a successor (R2: counted until reported unused).
  auto records = l.Records();
  std::erase_if(records, [](const AcceptanceRecord& r) { return r.epoch == 0; });
  EXPECT_EQ(records.size(), 2u);
  // b erases its acceptance and reports nothing held: it leaves the count.
  rb.request_id = 8;
  rb.erased = true;
  const std::uint32_t before = l.Snapshot(At(3)).targets[0].pool;
  ASSERT_TRUE(l.OnRequest(At(3), rb).ok());
  EXPECT_EQ(l.Snapshot(At(3)).targets[0].pool, before + 5);
}

// Issue 11 (the operator's guide found it): a dead workstation removed from
// the cluster file. Silence forgets what it was owed (C2) and says so in a
// notice, but not its last accepted allowance (R2: a removed broker cut off
// from the coordinator keeps using it); an operator's forced revoke, which
// says the workstation is dead, forgets it entirely, on disk too.
TEST(Ledger, ARemovedSilentBrokerStaysCountedUntilAForcedRevokeForgetsIt) {
  LedgerConfig c = FileConfig();
  c.brokers.pop_back();  // "b" was removed from the file
  std::vector<AcceptanceRecord> on_disk;
  int writes = 0;
  c.persist = [&](const std::vector<AcceptanceRecord>& records) {
    on_disk = records;
    ++writes;
    return true;
  };
  Ledger l(c, At(0));
  l.AdoptRecords({{"b", 1, 5, 3, {"exch"}, {1}, {4}}}, At(0));
  // Room 13 (pool 10 + a's 3): a's 3 and b's 5 are counted.
  EXPECT_EQ(l.Snapshot(At(1)).targets[0].pool, 5u);
  EXPECT_TRUE(l.Knows("b"));
  EXPECT_FALSE(l.FindBroker("b").has_value());
  EXPECT_TRUE(l.TakeNotices().empty());

  // Past S without a word from b: its instance is forgotten (logged), its
  // allowance is not.
  const TimePoint later = At(1) + l.Silence();
  ASSERT_TRUE(l.OnRequest(later, FileReq("a", 1, 1, 3, "aaaa")).ok());
  const std::vector<std::string> notices = l.TakeNotices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("broker 'b' (epoch 1)"), std::string::npos) << notices[0];
  EXPECT_NE(notices[0].find("forgotten"), std::string::npos) << notices[0];
  EXPECT_NE(notices[0].find("revoke b --force --confirm-dead"), std::string::npos) << notices[0];
  LedgerSnapshot s = l.Snapshot(later);
  ASSERT_EQ(s.targets[0].brokers.size(), 2u);
  EXPECT_EQ(s.targets[0].brokers[1].broker_id, "b");
  EXPECT_FALSE(s.targets[0].brokers[1].in_file);
  EXPECT_EQ(s.targets[0].brokers[1].instances, 0u);
  EXPECT_EQ(s.targets[0].brokers[1].counted, 5u);
  EXPECT_EQ(s.targets[0].pool, 5u);
  EXPECT_EQ(l.Snapshot(later + 10 * l.Silence()).targets[0].pool, 5u) << "silence freed it";

  // The operator confirms it dead: it leaves the count, the ledger and the records.
  const int writes_before = writes;
  ASSERT_TRUE(l.ForceRevoke("b", later).ok());
  EXPECT_EQ(writes, writes_before + 1);
  for (const auto& r : on_disk) EXPECT_NE(r.broker_id, "b");
  for (const auto& r : l.Records()) EXPECT_NE(r.broker_id, "b");
  s = l.Snapshot(later);
  EXPECT_EQ(s.targets[0].pool, 10u);
  EXPECT_EQ(s.targets[0].brokers.size(), 1u);
  EXPECT_FALSE(l.Knows("b"));
  EXPECT_EQ(l.ForceRevoke("b", later).code(), Errc::kConflict);
  // It is not revoked for good: if it comes back anyway, it is removed again.
  RenewRequest rb = FileReq("b", 2, 1, 3, "aaaa");
  EXPECT_EQ(l.OnRequest(later, rb).value()->verdict, Verdict::kRemoved);
}

TEST(Ledger, AForcedRevokeOfARemovedBrokerChangesNothingIfTheRecordsCannotBeWritten) {
  LedgerConfig c = FileConfig();
  c.brokers.pop_back();
  c.persist = [](const std::vector<AcceptanceRecord>&) { return false; };
  Ledger l(c, At(0));
  l.AdoptRecords({{"b", 1, 5, 3, {"exch"}, {1}, {4}}}, At(0));
  const Status s = l.ForceRevoke("b", At(1));
  EXPECT_EQ(s.code(), Errc::kInternal);
  EXPECT_NE(s.message().find("'b' is still counted"), std::string::npos) << s.message();
  EXPECT_TRUE(l.Knows("b"));
  EXPECT_EQ(l.Snapshot(At(1)).targets[0].pool, 5u);
}

TEST(Ledger, ARemovedBrokersErasedReportRewritesTheRecords) {
  LedgerConfig c = FileConfig();
  c.brokers.pop_back();
  std::vector<AcceptanceRecord> on_disk;
  c.persist = [&](const std::vector<AcceptanceRecord>& records) {
    on_disk = records;
    return true;
  };
  Ledger l(c, At(0));
  l.AdoptRecords({{"b", 1, 5, 3, {"exch"}, {1}, {4}}}, At(0));
  on_disk = l.Records();
  RenewRequest rb = FileReq("b", 1, 7, 3, "aaaa");
  rb.instance = 5;
  rb.erased = true;
  ASSERT_TRUE(l.OnRequest(At(1), rb).ok());
  for (const auto& r : on_disk) EXPECT_NE(r.broker_id, "b");
}

TEST(Ledger, ForgettingASilentBrokerIsANoticeNamingItAndWhatItWasOwed) {
  Ledger l(Config(), At(0));
  ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 1, 0, 0, 10))), 10);
  ASSERT_TRUE(l.OnRequest(At(0) + l.Silence(), Req("b", 1, 1, 0, 0, 10)).ok());
  EXPECT_TRUE(l.TakeNotices().empty()) << "forgotten before S";
  ASSERT_TRUE(l.OnRequest(At(1) + l.Silence(), Req("b", 1, 2, 0, 0, 10)).ok());
  const std::vector<std::string> notices = l.TakeNotices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("broker 'a' (epoch 1)"), std::string::npos) << notices[0];
  EXPECT_NE(notices[0].find("(exch 10)"), std::string::npos) << notices[0];
  EXPECT_EQ(notices[0].find("allowance"), std::string::npos) << notices[0];  // none here
  EXPECT_TRUE(l.TakeNotices().empty());
}

TEST(Ledger, ModeOfReadsTheModeGrantsSee) {
  Ledger l(Config(), At(0));
  EXPECT_EQ(l.ModeOf("a", 0), BrokerMode::kActive);
  ASSERT_TRUE(l.Drain("a", At(1)).ok());
  EXPECT_EQ(l.ModeOf("a", 0), BrokerMode::kDrained);
  ASSERT_TRUE(l.RevokeTarget("b", "exch", At(1)).ok());
  EXPECT_EQ(l.ModeOf("b", 0), BrokerMode::kRevoked);
  ASSERT_TRUE(l.Resume("b", At(2)).ok());
  EXPECT_EQ(l.ModeOf("b", 0), BrokerMode::kActive);
  EXPECT_EQ(l.ModeOf("nobody", 0), BrokerMode::kActive);
  EXPECT_TRUE(l.Knows("a"));
  EXPECT_FALSE(l.Knows("nobody"));
}

TEST(Ledger, ARestoredInstanceIsNotTakenForAClone) {
  Ledger l(FileConfig(), At(0));
  l.AdoptRecords({{"a", 1, 5, 3, {"exch"}, {1}, {2}}}, At(0));
  RenewRequest a = FileReq("a", 2, 1, 3, "aaaa");
  a.instance = 6;
  ASSERT_TRUE(l.OnRequest(At(1), a).ok());
  a.request_id = 2;
  auto r = l.OnRequest(At(2), a);
  EXPECT_EQ(r.value()->reason.find("another live instance"), std::string::npos) << r.value()->reason;
  for (const auto& w : l.TakeWarnings()) EXPECT_EQ(w.find("two live instances"), std::string::npos) << w;
}

TEST(Ledger, AClosedGateGrantsNothingAndOpeningItStartsLearning) {
  LedgerConfig c = FileConfig();
  c.switches.c3_learning = true;
  Ledger l(c, At(0));
  l.WaitForPrevious();
  auto r = l.OnRequest(At(1) + l.Silence(), FileReq("a", 1, 1, 3, "aaaa"));
  EXPECT_TRUE(r.value()->learning);
  EXPECT_EQ(r.value()->verdict, Verdict::kPending);
  const TimePoint open = At(2) + l.Silence();
  l.OpenGate(open);
  EXPECT_TRUE(l.Learning(open + l.Silence() - std::chrono::nanoseconds(1)));
  EXPECT_FALSE(l.Learning(open + l.Silence()));
}

TEST(Ledger, SnapshotShowsDemandOwedAndLastSeen) {
  Ledger l(Config(), At(0));
  RenewRequest r = Req("a", 1, 1, 2, 0, 5);
  r.targets[0].waiting = 3;
  ASSERT_EQ(Amount(l.OnRequest(At(1000), r)), 5);
  const LedgerSnapshot s = l.Snapshot(At(4000));
  ASSERT_EQ(s.targets.size(), 1u);
  const TargetLeaseView& t = s.targets[0];
  EXPECT_EQ(t.pool, 10u);
  EXPECT_EQ(t.owed_total, 5u);
  EXPECT_EQ(t.free, 5u);
  const BrokerLeaseView& a = t.brokers[0];
  EXPECT_TRUE(a.known);
  EXPECT_EQ(a.owed, 5u);
  EXPECT_EQ(a.granted, 5u);
  EXPECT_EQ(a.pool_held, 2u);
  EXPECT_EQ(a.waiting, 3u);
  EXPECT_EQ(a.wanted, 5u);
  EXPECT_EQ(a.last_seen_ago, milliseconds(3000));
  EXPECT_EQ(a.lease_left, seconds(15) - milliseconds(3000));
  EXPECT_FALSE(t.brokers[1].known);
  EXPECT_FALSE(t.brokers[1].last_seen_ago.has_value());
}

TEST(Ledger, ValidateRefusesBadConfig) {
  struct {
    const char* name;
    void (*mutate)(LedgerConfig&);
  } cases[] = {
      {"no targets", [](LedgerConfig& c) { c.targets.clear(); }},
      {"no brokers", [](LedgerConfig& c) { c.brokers.clear(); }},
      {"duplicate broker", [](LedgerConfig& c) { c.brokers[1].id = "a"; }},
      {"empty target", [](LedgerConfig& c) { c.targets[0].name = ""; }},
      {"zero weight", [](LedgerConfig& c) { c.brokers[0].weight = 0; }},
      {"zero term", [](LedgerConfig& c) { c.term = Duration::zero(); }},
      {"zero drain", [](LedgerConfig& c) { c.drain = Duration::zero(); }},
      {"huge eps", [](LedgerConfig& c) { c.eps = 0.5; }},
      {"pool above limit", [](LedgerConfig& c) { c.targets[0].limit = 3; }},
  };
  EXPECT_TRUE(Ledger::Validate(Config()).ok());
  for (const auto& c : cases) {
    LedgerConfig cfg = Config();
    c.mutate(cfg);
    const Status s = Ledger::Validate(cfg);
    EXPECT_EQ(s.code(), Errc::kConfig) << c.name;
  }
}

}  // namespace
}  // namespace dsb::lease

namespace dsb::lease {
namespace {

// Each reconfiguration switch changes the behaviour its clause guards (the
// simulation shows that the change breaks S; here only that it is wired).
TEST(LedgerSwitches, EachReconfigurationSwitchChangesItsRule) {
  {  // R1: a file that differs at the same generation
    LedgerConfig c = FileConfig();
    c.switches.r1_refuse_other_file = false;
    Ledger l(c, At(0));
    EXPECT_EQ(l.OnRequest(At(1), FileReq("a", 1, 1, 3, "bbbb")).value()->verdict,
              Verdict::kAccepted);
  }
  {  // R2: the fit test
    LedgerConfig c = FileConfig();
    c.switches.r2_fit_test = false;
    Ledger l(c, At(0));
    RenewRequest a = FileReq("a", 1, 1, 3, "aaaa");
    a.targets[0].wanted = 10;
    ASSERT_EQ(Amount(l.OnRequest(At(1), a)), 10);
    EXPECT_EQ(l.OnRequest(At(2), FileReq("a", 2, 1, 3, "aaaa")).value()->verdict,
              Verdict::kAccepted);
  }
  {  // R2: a broker nobody hears still counts its allowance
    LedgerConfig c = FileConfig();
    c.switches.r2_count_unheard = false;
    Ledger l(c, At(0));
    EXPECT_EQ(l.Snapshot(At(0)).targets[0].pool, 16u);  // 10 with the clause
  }
  {  // R3: stepping down for a newer generation
    LedgerConfig c = FileConfig();
    c.switches.r3_step_down = false;
    Ledger l(c, At(0));
    l.WaitForPrevious();
    EXPECT_EQ(l.gate(), Gate::kOpen);
  }
  {  // R4: an older instance's owed
    LedgerConfig c = Config();
    c.switches.r4_keep_older = false;
    Ledger l(c, At(0));
    ASSERT_EQ(Amount(l.OnRequest(At(1), Req("a", 1, 7, 0, 0, 10))), 10);
    ASSERT_TRUE(l.OnRequest(At(2), Req("a", 2, 1, 2, 0, 0)).ok());
    EXPECT_EQ(l.Owed(0, 0, At(2)), 2u);  // 12 with the clause
  }
}

}  // namespace
}  // namespace dsb::lease
