#include "broker/lease/agent.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <vector>

namespace dsb::lease {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TimePoint At(std::int64_t ms) { return TimePoint{} + milliseconds(ms); }

AgentConfig Config() {
  AgentConfig c;
  c.broker_id = "a";
  c.epoch = 7;
  c.targets = {{"exch", 1, 2}};  // system_slots 1, floor 2
  c.term = seconds(15);
  c.eps = 1e-3;
  return c;
}

std::vector<TargetUsage> Usage(std::uint32_t actions, std::uint32_t waiting = 0) {
  return {TargetUsage{actions, waiting}};
}

Grant GrantFor(const RenewRequest& r, std::uint32_t amount) {
  Grant g;
  g.broker_id = r.broker_id;
  g.epoch = r.epoch;
  g.request_id = r.request_id;
  g.term = seconds(15);
  g.targets = {{"exch", amount}};
  return g;
}

// R1: the coordinator accepts this instance with a learning reply (no lease)
// to `request`.
void Accept(LeaseAgent& a, const RenewRequest& request, TimePoint at) {
  Grant g = GrantFor(request, 0);
  g.learning = true;
  g.verdict = Verdict::kAccepted;
  a.OnGrant(at, g);
}

TEST(Agent, FirstTickSendsARequestReportingPoolHeldAndDemand) {
  LeaseAgent a(Config(), At(0));
  AgentStep s = a.Tick(At(0), Usage(5, 4));
  ASSERT_TRUE(s.send.has_value());
  EXPECT_EQ(s.send->broker_id, "a");
  EXPECT_EQ(s.send->epoch, 7u);
  EXPECT_EQ(s.send->request_id, 1u);
  ASSERT_EQ(s.send->targets.size(), 1u);
  const TargetReport& t = s.send->targets[0];
  // R1: not accepted yet, so no floor: every held action is pool_held.
  EXPECT_EQ(t.pool_held, 5u);
  EXPECT_EQ(t.applied, 0u);
  EXPECT_EQ(t.held, 5u);
  EXPECT_EQ(t.waiting, 4u);
  EXPECT_EQ(t.wanted, 9u);
  EXPECT_EQ(s.targets[0].action_capacity, 0u);  // nothing used before acceptance
  EXPECT_EQ(s.targets[0].registration_capacity, 0u);
  EXPECT_FALSE(a.MayAdmitRegistration(0, 0));
  Accept(a, *s.send, At(1));
  s = a.Tick(At(5000), Usage(5, 4));
  ASSERT_TRUE(s.send.has_value());
  EXPECT_EQ(s.send->targets[0].pool_held, 3u);  // max(0, 5 - floor 2)
  EXPECT_EQ(s.send->targets[0].wanted, 7u);     // 5 + 4 - floor
  EXPECT_EQ(s.targets[0].action_capacity, 2u);  // floor only, no lease yet
  EXPECT_EQ(s.targets[0].registration_capacity, 1u);
  EXPECT_TRUE(a.MayAdmitRegistration(0, 0));
}

TEST(Agent, RefusedInstanceLosesItsFloorAndNewRegistrations) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
  Accept(a, r, At(1));
  ASSERT_EQ(a.Capacity(0, At(2)).action_capacity, 2u);
  const RenewRequest r2 = *a.Tick(At(5000), Usage(0)).send;
  Grant g = GrantFor(r2, 4);
  g.verdict = Verdict::kRefused;
  g.reason = "cluster file differs";
  const AgentStep s = a.OnGrant(At(5001), g);
  EXPECT_EQ(s.targets[0].action_capacity, 0u);  // the amount is not applied either
  EXPECT_TRUE(s.targets[0].shrunk);
  EXPECT_FALSE(a.MayAdmitRegistration(0, 0));
  EXPECT_EQ(a.verdict_reason(), "cluster file differs");
}

TEST(Agent, ADelayedOlderAcceptanceDoesNotUndoARefusal) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r1 = *a.Tick(At(0), Usage(0)).send;
  const RenewRequest r2 = *a.Tick(At(5000), Usage(0)).send;
  Grant refused = GrantFor(r2, 0);
  refused.verdict = Verdict::kRefused;
  a.OnGrant(At(5001), refused);
  Accept(a, r1, At(5002));  // the answer to the first request, delayed
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(a.verdict(), Verdict::kRefused);
}

TEST(Agent, GrantForAnotherInstanceOfTheSameEpochIsIgnored) {
  AgentConfig c = Config();
  c.instance = 42;
  LeaseAgent a(c, At(0));
  const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
  EXPECT_EQ(r.instance, 42u);
  Grant g = GrantFor(r, 0);
  g.instance = 43;  // a clone with the same epoch counter
  a.OnGrant(At(1), g);
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(a.ignored_grants(), 1u);
}

TEST(Agent, AdoptedActionsAreKeptUntilTheInheritedDeadlineWhileNotAccepted) {
  AgentConfig c = Config();
  c.targets[0].inherited_until = At(3000);
  LeaseAgent a(c, At(0));
  AgentStep s = a.Tick(At(0), Usage(6));
  EXPECT_EQ(s.targets[0].action_capacity, 6u);  // what adopted clients hold, nothing new
  s = a.Tick(At(100), Usage(4));                // two released: never given out again
  EXPECT_EQ(s.targets[0].action_capacity, 4u);
  s = a.Tick(At(200), Usage(4));
  EXPECT_EQ(s.targets[0].action_capacity, 4u);
  EXPECT_EQ(a.Capacity(0, At(3000)).action_capacity, 0u);  // the old lease's deadline
}

TEST(Agent, PoolHeldIsZeroBelowTheFloor) {
  LeaseAgent a(Config(), At(0));
  Accept(a, *a.Tick(At(0), Usage(1)).send, At(1));
  EXPECT_EQ(a.Tick(At(5000), Usage(1)).send->targets[0].pool_held, 0u);
}

TEST(Agent, RenewsEveryThirdOfTheTermAndResendsUnansweredRequests) {
  LeaseAgent a(Config(), At(0));
  AgentStep s = a.Tick(At(0), Usage(0));
  ASSERT_TRUE(s.send);
  EXPECT_EQ(s.deadline, At(1250));  // resend at D/12
  s = a.Tick(At(1250), Usage(0));
  ASSERT_TRUE(s.send);
  EXPECT_EQ(s.send->request_id, 1u);  // a resend keeps the id
  a.OnGrant(At(1300), GrantFor(*s.send, 1));
  s = a.Tick(At(1300), Usage(0));
  EXPECT_FALSE(s.send);
  EXPECT_EQ(s.deadline, At(5000));  // renew at D/3
  s = a.Tick(At(5000), Usage(0));
  ASSERT_TRUE(s.send);
  EXPECT_EQ(s.send->request_id, 2u);
  EXPECT_EQ(s.send->targets[0].applied, 1u);
}

TEST(Agent, LeaseCountsFromFirstSendUntilTermMinusEps) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
  ASSERT_TRUE(a.Tick(At(1250), Usage(0)).send);  // resend
  AgentStep s = a.OnGrant(At(1300), GrantFor(r, 4));
  EXPECT_EQ(s.targets[0].action_capacity, 6u);  // floor 2 + lease 4
  const TimePoint end = At(15000 - 15);         // 0 + 15 s * (1 - 1e-3)
  EXPECT_EQ(s.targets[0].lease_valid_until, end);
  EXPECT_EQ(a.Capacity(0, end - std::chrono::nanoseconds(1)).action_capacity, 6u);
  EXPECT_EQ(a.Capacity(0, end).action_capacity, 2u);  // falls back to the floor
}

TEST(Agent, ReportsShrunkWhenCapacityFalls) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r1 = *a.Tick(At(0), Usage(0)).send;
  EXPECT_FALSE(a.OnGrant(At(1), GrantFor(r1, 5)).targets[0].shrunk);
  const RenewRequest r2 = *a.Tick(At(5000), Usage(7)).send;
  const AgentStep s = a.OnGrant(At(5001), GrantFor(r2, 1));
  EXPECT_TRUE(s.targets[0].shrunk);
  EXPECT_EQ(s.targets[0].action_capacity, 3u);
  // Lapse is a shrink too.
  const TimePoint lapse = *s.targets[0].lease_valid_until;
  AgentStep l = a.Tick(lapse, Usage(3));
  // The renew at 10 s went unanswered; Tick at the lapse sees floor only.
  EXPECT_EQ(l.targets[0].action_capacity, 2u);
  EXPECT_TRUE(l.targets[0].shrunk);
}

struct IgnoreCase {
  const char* name;
  Grant (*make)(const RenewRequest& newest);
};

TEST(Agent, IgnoresGrantsThatB1aRefuses) {
  const IgnoreCase cases[] = {
      {"other epoch",
       [](const RenewRequest& r) {
         Grant g = GrantFor(r, 9);
         g.epoch = 6;
         return g;
       }},
      {"other broker",
       [](const RenewRequest& r) {
         Grant g = GrantFor(r, 9);
         g.broker_id = "b";
         return g;
       }},
      {"unknown request",
       [](const RenewRequest& r) {
         Grant g = GrantFor(r, 9);
         g.request_id = 99;
         return g;
       }},
      {"older than applied",
       [](const RenewRequest& r) {
         Grant g = GrantFor(r, 9);
         g.request_id = 1;
         return g;
       }},
      {"duplicate of applied",
       [](const RenewRequest& r) {
         Grant g = GrantFor(r, 9);
         g.request_id = 2;
         return g;
       }},
      {"learning reply",
       [](const RenewRequest& r) {
         Grant g = GrantFor(r, 9);
         g.request_id = 3;
         g.learning = true;
         g.targets.clear();
         return g;
       }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    LeaseAgent a(Config(), At(0));
    const RenewRequest r1 = *a.Tick(At(0), Usage(0)).send;
    const RenewRequest r2 = *a.Tick(At(5000), Usage(0)).send;
    a.OnGrant(At(5001), GrantFor(r2, 3));  // applied = 2, lease 3
    const RenewRequest r3 = *a.Tick(At(10000), Usage(0)).send;
    ASSERT_EQ(r3.request_id, 3u);
    (void)r1;
    const AgentStep s = a.OnGrant(At(10001), c.make(r3));
    EXPECT_EQ(s.targets[0].lease, 3u);
    EXPECT_EQ(s.targets[0].applied, 2u);
  }
}

TEST(Agent, AppliesANewerGrantAfterAnOlderOne) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r1 = *a.Tick(At(0), Usage(0)).send;
  const RenewRequest r2 = *a.Tick(At(5000), Usage(0)).send;
  a.OnGrant(At(5001), GrantFor(r1, 8));
  const AgentStep s = a.OnGrant(At(5002), GrantFor(r2, 2));
  EXPECT_EQ(s.targets[0].lease, 2u);
  EXPECT_EQ(s.targets[0].applied, 2u);
  EXPECT_EQ(s.targets[0].lease_valid_until, At(5000 + 15000 - 15));
}

TEST(Agent, LearningReplyStopsResendsWithoutApplying) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
  Grant g = GrantFor(r, 0);
  g.learning = true;
  g.targets.clear();
  const AgentStep s = a.OnGrant(At(10), g);
  EXPECT_EQ(s.deadline, At(5000));
  EXPECT_EQ(s.targets[0].applied, 0u);
}

TEST(Agent, RevokeNoticeOfOurEpochRenewsAtOnce) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
  a.OnGrant(At(10), GrantFor(r, 4));
  EXPECT_EQ(a.OnRevokeNotice(At(20), {"a", 6}).deadline, At(5000));  // other epoch
  EXPECT_EQ(a.OnRevokeNotice(At(20), {"a", 7}).deadline, At(20));
  const AgentStep s = a.Tick(At(20), Usage(6));
  ASSERT_TRUE(s.send);
  EXPECT_EQ(s.send->request_id, 2u);
}

TEST(Agent, DropLeaseFallsToTheFloorAtOnceAsAShrinkAndRenews) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r1 = *a.Tick(At(0), Usage(0)).send;
  a.OnGrant(At(10), GrantFor(r1, 5));
  ASSERT_EQ(a.Capacity(0, At(20)).action_capacity, 7u);  // floor 2 + lease 5
  const AgentStep d = a.DropLease(At(20));
  EXPECT_EQ(d.targets[0].action_capacity, 2u);  // the floor only, at once
  EXPECT_EQ(d.targets[0].lease, 0u);
  EXPECT_FALSE(d.targets[0].lease_valid_until.has_value());
  EXPECT_TRUE(d.targets[0].shrunk);  // B2: the caller raises the revocation generation
  EXPECT_EQ(d.deadline, At(20));     // a renew is due now
  EXPECT_FALSE(a.MayAdmitAction(0, 0, 2, At(21)));
  const AgentStep t = a.Tick(At(20), Usage(2));
  ASSERT_TRUE(t.send);
  EXPECT_EQ(t.send->request_id, 2u);
  EXPECT_EQ(t.send->targets[0].applied, 1u);
  // A later grant is applied normally.
  const AgentStep g = a.OnGrant(At(30), GrantFor(*t.send, 3));
  EXPECT_EQ(g.targets[0].action_capacity, 5u);
  EXPECT_EQ(g.targets[0].lease_valid_until, At(20 + 15000 - 15));
  // Dropping nothing (no lease left) reports no shrink.
  a.DropLease(At(40));
  EXPECT_FALSE(a.DropLease(At(41)).targets[0].shrunk);
}

TEST(Agent, ActionsNeverUseAnIdleSystemSlot) {
  AgentConfig c = Config();
  c.targets[0].system_slots = 2;
  LeaseAgent a(c, At(0));
  const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
  a.OnGrant(At(1), GrantFor(r, 3));  // capacity floor 2 + 3
  EXPECT_TRUE(a.MayAdmitAction(0, /*registered=*/1, /*actions=*/4, At(2)));
  EXPECT_FALSE(a.MayAdmitAction(0, 1, 5, At(2)));
  EXPECT_TRUE(a.MayAdmitRegistration(0, 1));
  EXPECT_FALSE(a.MayAdmitRegistration(0, 2));
}

TEST(Agent, ReportCombinesHeldAndAppliedOfOneInstant) {
  LeaseAgent a(Config(), At(0));
  const RenewRequest r1 = *a.Tick(At(0), Usage(2)).send;
  a.OnGrant(At(1), GrantFor(r1, 5));
  const RenewRequest r2 = *a.Tick(At(5000), Usage(7)).send;
  EXPECT_EQ(r2.targets[0].pool_held, 5u);
  EXPECT_EQ(r2.targets[0].applied, 1u);
}

// The switches really switch (the simulation shows what each one breaks).
TEST(AgentSwitches, EachSwitchChangesTheGuardedBehaviour) {
  {
    AgentConfig c = Config();
    c.switches.b1_first_t_sent = false;
    LeaseAgent a(c, At(0));
    const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
    a.Tick(At(1250), Usage(0));  // resend
    EXPECT_EQ(a.OnGrant(At(1300), GrantFor(r, 4)).targets[0].lease_valid_until,
              At(1250 + 15000 - 15));
  }
  {
    AgentConfig c = Config();
    c.switches.b1_eps_margin = false;
    LeaseAgent a(c, At(0));
    const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
    EXPECT_EQ(a.OnGrant(At(1), GrantFor(r, 4)).targets[0].lease_valid_until, At(15000));
  }
  {
    AgentConfig c = Config();
    c.switches.b1a_order = false;
    LeaseAgent a(c, At(0));
    const RenewRequest r1 = *a.Tick(At(0), Usage(0)).send;
    const RenewRequest r2 = *a.Tick(At(5000), Usage(0)).send;
    a.OnGrant(At(5001), GrantFor(r2, 2));
    EXPECT_EQ(a.OnGrant(At(5002), GrantFor(r1, 8)).targets[0].lease, 8u);
  }
  {
    AgentConfig c = Config();
    c.switches.b1a_epoch = false;
    LeaseAgent a(c, At(0));
    const RenewRequest r = *a.Tick(At(0), Usage(0)).send;
    Grant g = GrantFor(r, 8);
    g.epoch = 3;
    EXPECT_EQ(a.OnGrant(At(1), g).targets[0].lease, 8u);
  }
  {
    AgentConfig c = Config();
    c.switches.b2_one_instant = false;
    LeaseAgent a(c, At(0));
    Accept(a, *a.Tick(At(0), Usage(2)).send, At(1));
    EXPECT_EQ(a.Tick(At(5000), Usage(9)).send->targets[0].pool_held, 0u);  // previous: 2 - floor
  }
  {
    AgentConfig c = Config();
    c.switches.b1_two_counters = false;
    LeaseAgent a(c, At(0));
    Accept(a, *a.Tick(At(0), Usage(0)).send, At(0));
    EXPECT_TRUE(a.MayAdmitAction(0, 0, 2, At(0)));  // uses the idle system slot
  }
}

TEST(Agent, ValidateRefusesBadConfig) {
  EXPECT_TRUE(LeaseAgent::Validate(Config()).ok());
  AgentConfig c = Config();
  c.targets.clear();
  EXPECT_EQ(LeaseAgent::Validate(c).code(), Errc::kConfig);
  c = Config();
  c.renew_interval = seconds(20);
  EXPECT_EQ(LeaseAgent::Validate(c).code(), Errc::kConfig);
  c = Config();
  c.broker_id.clear();
  EXPECT_EQ(LeaseAgent::Validate(c).code(), Errc::kConfig);
}

}  // namespace
}  // namespace dsb::lease
