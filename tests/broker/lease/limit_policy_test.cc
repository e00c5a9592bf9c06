// LimitPolicy (DESIGN section 8): sources, feedback rule F2, bounds, additive
// increase and the ratchet test switch, on an injected clock.
#include "broker/lease/limit_policy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace dsb::lease {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kT0 = TimePoint{} + seconds(1000);

LimitPolicyConfig Cfg(std::uint32_t ceiling = 20, std::uint32_t minimum = 4) {
  LimitPolicyConfig c;
  c.ceiling = ceiling;
  c.minimum = minimum;
  return c;
}

// ---- F1/F2: feedback ----

// A burst against a real cap of 12 from a configured 20: refusals are reported
// at the levels a real burst produces (held between 12 and 19; most near the
// top while the grants above the cap drain, and some at or above a limit that
// was just lowered). Every table row is one burst shape; each must reach 12
// within 2 x (20 - 12) refusals reported below the limit (rule F2's bound) and
// never go below 12.
TEST(LimitPolicyFeedback, ConvergesFromAboveToTheCapWithinTwiceTheGapAndNeverBelow) {
  struct Row {
    const char* shape;
    // Given the current limit and the refusal number, the held level reported.
    std::uint32_t (*held)(std::uint32_t limit, std::uint32_t k, std::mt19937& rng);
  };
  const std::vector<Row> rows = {
      {"every report one below the limit",
       [](std::uint32_t limit, std::uint32_t, std::mt19937&) { return limit - 1; }},
      {"every report at the cap",
       [](std::uint32_t, std::uint32_t, std::mt19937&) { return 12u; }},
      {"alternating limit-1 and the cap",
       [](std::uint32_t limit, std::uint32_t k, std::mt19937&) { return k % 2 ? limit - 1 : 12u; }},
      {"uniform in [12, limit-1]",
       [](std::uint32_t limit, std::uint32_t, std::mt19937& rng) {
         return 12u + static_cast<std::uint32_t>(rng() % (limit - 12));
       }},
      {"mostly 19 (stale reports from before a lowering), sometimes lower",
       [](std::uint32_t limit, std::uint32_t k, std::mt19937&) {
         return k % 3 == 0 ? limit - 1 : 19u;
       }},
  };
  for (const Row& row : rows) {
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
      std::mt19937 rng(seed);
      LimitPolicy p(Cfg(), kT0);
      // Refusals reported below the limit (F1 evidence); reports at or above
      // it (stale, from before a lowering) are not counted against the bound.
      std::uint32_t evidence = 0;
      std::uint32_t k = 0;
      TimePoint now = kT0;
      while (p.limit() > 12 && k < 200) {
        now += milliseconds(5);
        const std::uint32_t h = row.held(p.limit(), k++, rng);
        if (h < p.limit()) ++evidence;
        const auto change = p.OnRefusal(now, h);
        EXPECT_GE(p.limit(), 12u) << row.shape << " seed " << seed;
        if (change) {
          EXPECT_LT(change->to, change->from);
          EXPECT_EQ(change->source, LimitSource::kDiscovered);
        }
      }
      EXPECT_EQ(p.limit(), 12u) << row.shape << " seed " << seed;
      EXPECT_LE(evidence, 2u * (20 - 12)) << row.shape << " seed " << seed;
      // Once there, refusals at the cap (not below the limit) change nothing.
      for (int i = 0; i < 10; ++i) EXPECT_FALSE(p.OnRefusal(now += milliseconds(5), 12));
      EXPECT_EQ(p.limit(), 12u);
      EXPECT_EQ(p.source(), LimitSource::kDiscovered);
    }
  }
}

TEST(LimitPolicyFeedback, AnIsolatedRefusalNeverLowers) {
  LimitPolicy p(Cfg(), kT0);
  EXPECT_FALSE(p.OnRefusal(kT0 + seconds(1), 5));
  EXPECT_EQ(p.limit(), 20u);
  EXPECT_EQ(p.source(), LimitSource::kConfig);
  EXPECT_EQ(p.refusals_reported(), 1u);
  EXPECT_EQ(p.changes(), 0u);
}

TEST(LimitPolicyFeedback, RefusalsSpacedWiderThanTheWindowNeverLower) {
  LimitPolicyConfig c = Cfg();
  c.window = seconds(10);
  LimitPolicy p(c, kT0);
  TimePoint now = kT0;
  for (int i = 0; i < 50; ++i) {
    now += seconds(10) + milliseconds(1);
    EXPECT_FALSE(p.OnRefusal(now, 10)) << "refusal " << i;
  }
  EXPECT_EQ(p.limit(), 20u);
  EXPECT_EQ(p.refusals_reported(), 50u);
}

TEST(LimitPolicyFeedback, TwoRefusalsWithinTheWindowLowerToTheSecondSmallestLevel) {
  LimitPolicyConfig c = Cfg();
  c.window = seconds(10);
  LimitPolicy p(c, kT0);
  EXPECT_FALSE(p.OnRefusal(kT0 + seconds(1), 14));
  const auto change = p.OnRefusal(kT0 + seconds(10), 17);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->from, 20u);
  EXPECT_EQ(change->to, 17u);  // both reports agree only on cap <= 17
  EXPECT_NE(change->cause.find("2 refusal(s) at <= 17"), std::string::npos) << change->cause;
  EXPECT_EQ(p.changed_at(), kT0 + seconds(10));
}

TEST(LimitPolicyFeedback, RefusalsAtOrAboveTheLimitAreCountedNotEvidence) {
  LimitPolicy p(Cfg(), kT0);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(p.OnRefusal(kT0 + milliseconds(i), static_cast<std::uint32_t>(20 + i % 3)));
  EXPECT_EQ(p.limit(), 20u);
  EXPECT_EQ(p.refusals_reported(), 10u);
}

TEST(LimitPolicyFeedback, DiscoverOffCountsRefusalsAndNeverLowers) {
  LimitPolicyConfig c = Cfg();
  c.discover = false;
  LimitPolicy p(c, kT0);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(p.OnRefusal(kT0 + milliseconds(i), 5));
  EXPECT_EQ(p.limit(), 20u);
  EXPECT_EQ(p.refusals_reported(), 10u);
}

TEST(LimitPolicyBounds, NeverBelowTheMinimumAndTheCauseSaysSo) {
  LimitPolicy p(Cfg(20, 8), kT0);
  EXPECT_FALSE(p.OnRefusal(kT0 + milliseconds(1), 2));
  const auto change = p.OnRefusal(kT0 + milliseconds(2), 3);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->to, 8u);
  EXPECT_NE(change->cause.find("minimum 8"), std::string::npos) << change->cause;
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(p.OnRefusal(kT0 + milliseconds(3 + i), 0));
  EXPECT_EQ(p.limit(), 8u);
}

TEST(LimitPolicyBounds, ValidateNamesTheBadValue) {
  struct Row {
    LimitPolicyConfig c;
    const char* names;
  };
  LimitPolicyConfig below = Cfg(5, 6);
  LimitPolicyConfig zero_min = Cfg(5, 0);
  LimitPolicyConfig no_conf = Cfg();
  no_conf.confirmations = 0;
  LimitPolicyConfig no_window = Cfg();
  no_window.window = Duration::zero();
  LimitPolicyConfig negative = Cfg();
  negative.increase_after = -seconds(1);
  for (const Row& row : std::vector<Row>{{below, "minimum 6"},
                                         {zero_min, "at least 1"},
                                         {no_conf, "confirmation"},
                                         {no_window, "window"},
                                         {negative, "limit_increase_after"}}) {
    const Status s = LimitPolicy::Validate(row.c);
    EXPECT_FALSE(s.ok()) << row.names;
    EXPECT_NE(s.message().find(row.names), std::string::npos) << s.message();
  }
  EXPECT_TRUE(LimitPolicy::Validate(Cfg()).ok());
}

// ---- Q1: operator and query ----

TEST(LimitPolicyOperator, ValueOutsideTheBoundsIsAnErrorNamingThemAndChangesNothing) {
  LimitPolicy p(Cfg(20, 4), kT0);
  for (std::uint32_t v : {0u, 3u, 21u, 100u}) {
    const auto r = p.OnOperator(kT0 + seconds(1), v);
    ASSERT_FALSE(r.ok()) << v;
    EXPECT_EQ(r.status().code(), Errc::kInvalidArgument);
    EXPECT_NE(r.status().message().find("4..20"), std::string::npos) << r.status().message();
    EXPECT_EQ(p.limit(), 20u);
    EXPECT_EQ(p.source(), LimitSource::kConfig);
    EXPECT_EQ(p.changes(), 0u);
  }
}

TEST(LimitPolicyOperator, ValueInsideTheBoundsReplacesTheLimitAndTheBase) {
  LimitPolicy p(Cfg(), kT0);
  const auto r = p.OnOperator(kT0 + seconds(1), 12);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r.value());
  EXPECT_EQ(r.value()->to, 12u);
  EXPECT_EQ(r.value()->source, LimitSource::kOperator);
  EXPECT_EQ(p.base(), 12u);
  EXPECT_EQ(p.source(), LimitSource::kOperator);
}

TEST(LimitPolicyOperator, BeatsLaterQueries) {
  LimitPolicy p(Cfg(), kT0);
  ASSERT_TRUE(p.OnOperator(kT0, 12).ok());
  EXPECT_FALSE(p.OnQuery(kT0 + seconds(1), 15));
  EXPECT_FALSE(p.OnQuery(kT0 + seconds(2), 9));
  EXPECT_EQ(p.limit(), 12u);
  EXPECT_EQ(p.source(), LimitSource::kOperator);
  EXPECT_EQ(p.base(), 12u);
}

TEST(LimitPolicyQuery, SameAnswerTwiceChangesNothing) {
  LimitPolicy p(Cfg(), kT0);
  const auto first = p.OnQuery(kT0, 15);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->to, 15u);
  EXPECT_EQ(first->source, LimitSource::kQuery);
  const std::uint64_t changes = p.changes();
  // Discovery lowers it below the answer; the same answer again keeps that.
  p.OnRefusal(kT0 + seconds(1), 13);
  ASSERT_TRUE(p.OnRefusal(kT0 + seconds(2), 13));
  EXPECT_EQ(p.limit(), 13u);
  EXPECT_FALSE(p.OnQuery(kT0 + seconds(3), 15));
  EXPECT_EQ(p.limit(), 13u);
  EXPECT_EQ(p.source(), LimitSource::kDiscovered);
  EXPECT_EQ(p.changes(), changes + 1);
}

TEST(LimitPolicyQuery, DifferentAnswerReplacesTheLimit) {
  LimitPolicy p(Cfg(), kT0);
  ASSERT_TRUE(p.OnQuery(kT0, 15));
  const auto change = p.OnQuery(kT0 + seconds(1), 11);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->from, 15u);
  EXPECT_EQ(change->to, 11u);
  EXPECT_EQ(p.base(), 11u);
  EXPECT_NE(change->cause.find("answered 11"), std::string::npos) << change->cause;
}

TEST(LimitPolicyQuery, AnswerAboveTheCeilingIsClampedAndTheCauseSaysSo) {
  LimitPolicy p(Cfg(20, 4), kT0);
  ASSERT_TRUE(p.OnQuery(kT0, 15));
  const auto change = p.OnQuery(kT0 + seconds(1), 50);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->to, 20u);
  EXPECT_NE(change->cause.find("answered 50"), std::string::npos) << change->cause;
  EXPECT_NE(change->cause.find("ceiling"), std::string::npos) << change->cause;
  const auto low = p.OnQuery(kT0 + seconds(2), 1);
  ASSERT_TRUE(low);
  EXPECT_EQ(low->to, 4u);
  EXPECT_NE(low->cause.find("minimum 4"), std::string::npos) << low->cause;
}

TEST(LimitPolicyQuery, ClearsTheRefusalHistory) {
  LimitPolicy p(Cfg(), kT0);
  EXPECT_FALSE(p.OnRefusal(kT0, 10));
  ASSERT_TRUE(p.OnQuery(kT0 + seconds(1), 18));
  // One report before the query and one after are not two confirmations.
  EXPECT_FALSE(p.OnRefusal(kT0 + seconds(2), 10));
  EXPECT_EQ(p.limit(), 18u);
}

// ---- F4: additive increase ----

TEST(LimitPolicyIncrease, OffByDefault) {
  LimitPolicy p(Cfg(), kT0);
  // Two bursts a second apart: a confirmed lowering (no probation probe).
  p.OnRefusal(kT0, 12);
  ASSERT_TRUE(p.OnRefusal(kT0 + seconds(1), 12));
  EXPECT_EQ(p.NextTick(), TimePoint::max());
  EXPECT_FALSE(p.Tick(kT0 + std::chrono::hours(100)));
  EXPECT_EQ(p.limit(), 12u);
}

// F2a: one burst (another tool briefly on the account) lowers the limit only
// for a while: after each probation without a refusal it rises by one, back to
// where the burst found it, and stays there.
TEST(LimitPolicyProbation, ASingleBurstsLoweringIsUndoneAfterQuietProbations) {
  LimitPolicy p(Cfg(), kT0);
  ASSERT_TRUE(p.OnOperator(kT0, 12).ok());
  p.OnRefusal(kT0 + milliseconds(1), 10);
  const auto change = p.OnRefusal(kT0 + milliseconds(20), 10);
  ASSERT_TRUE(change);
  EXPECT_EQ(p.limit(), 10u);
  TimePoint now = kT0 + milliseconds(20);
  EXPECT_EQ(p.NextTick(), now + seconds(60));
  EXPECT_FALSE(p.Tick(now + seconds(59)));
  now += seconds(60);
  ASSERT_TRUE(p.Tick(now));
  EXPECT_EQ(p.limit(), 11u);
  now += seconds(60);
  ASSERT_TRUE(p.Tick(now));
  EXPECT_EQ(p.limit(), 12u);
  EXPECT_EQ(p.source(), LimitSource::kOperator);  // back at the operator's value
  EXPECT_EQ(p.NextTick(), TimePoint::max());
}

// F2a with a real cap: the probe above it is refused twice and the level below
// is confirmed: no more probes (one probe, a couple of refusals, once).
TEST(LimitPolicyProbation, ARealCapRefusesTheProbeAndIsConfirmed) {
  LimitPolicy p(Cfg(), kT0);
  TimePoint now = kT0;
  for (std::uint32_t h = 19; p.limit() > 12; h = std::max<std::uint32_t>(12, h - 1)) {
    p.OnRefusal(now += milliseconds(5), h);
  }
  ASSERT_EQ(p.limit(), 12u);
  now = p.NextTick();
  ASSERT_TRUE(p.Tick(now));
  ASSERT_EQ(p.limit(), 13u);
  p.OnRefusal(now + milliseconds(30), 12);
  const auto back = p.OnRefusal(now + milliseconds(60), 12);
  ASSERT_TRUE(back);
  EXPECT_EQ(p.limit(), 12u);
  EXPECT_EQ(p.NextTick(), TimePoint::max()) << "a confirmed level is not probed again";
}

// Reports from two bursts further apart than the event gap confirm at once.
TEST(LimitPolicyProbation, TwoBurstsConfirmWithoutProbation) {
  LimitPolicy p(Cfg(), kT0);
  p.OnRefusal(kT0, 12);
  ASSERT_TRUE(p.OnRefusal(kT0 + milliseconds(500), 12));
  EXPECT_EQ(p.NextTick(), TimePoint::max());
}

TEST(LimitPolicyIncrease, RisesByOnePerQuietPeriodBackToTheBaseAndRestoresItsSource) {
  struct Row {
    const char* base_source;
    LimitSource expect;
  };
  for (const Row& row : std::vector<Row>{{"config", LimitSource::kConfig},
                                         {"query", LimitSource::kQuery},
                                         {"operator", LimitSource::kOperator}}) {
    LimitPolicyConfig c = Cfg();
    c.increase_after = seconds(30);
    LimitPolicy p(c, kT0);
    TimePoint now = kT0;
    if (std::string(row.base_source) == "query") {
      ASSERT_TRUE(p.OnQuery(now, 16));
    }
    if (std::string(row.base_source) == "operator") {
      ASSERT_TRUE(p.OnOperator(now, 16).ok());
    }
    const std::uint32_t base = p.base();
    p.OnRefusal(now += seconds(1), 12);
    ASSERT_TRUE(p.OnRefusal(now += seconds(1), 12));
    ASSERT_EQ(p.limit(), 12u);
    // A refusal restarts the quiet period.
    p.OnRefusal(now += seconds(20), 30);
    EXPECT_EQ(p.NextTick(), now + seconds(30)) << row.base_source;
    EXPECT_FALSE(p.Tick(now + seconds(29)));
    std::uint32_t expect = 12;
    while (expect < base) {
      now = p.NextTick();
      const auto change = p.Tick(now);
      ASSERT_TRUE(change) << row.base_source;
      ++expect;
      EXPECT_EQ(change->to, expect);
      EXPECT_NE(change->cause.find("no refusal for 30 s"), std::string::npos) << change->cause;
      EXPECT_EQ(p.source(), expect == base ? row.expect : LimitSource::kDiscovered)
          << row.base_source << " at " << expect;
    }
    EXPECT_EQ(p.limit(), base);
    EXPECT_EQ(p.NextTick(), TimePoint::max());
    EXPECT_FALSE(p.Tick(now + std::chrono::hours(1)));
  }
}

// ---- every change: a cause, counted ----

TEST(LimitPolicyChanges, EveryChangeReturnsACauseAndIsCounted) {
  LimitPolicyConfig c = Cfg();
  c.increase_after = seconds(5);
  LimitPolicy p(c, kT0);
  std::uint64_t expect = 0;
  auto saw = [&](const std::optional<LimitChange>& ch) {
    ASSERT_TRUE(ch);
    EXPECT_FALSE(ch->cause.empty());
    EXPECT_NE(ch->from, ch->to);
    EXPECT_EQ(p.changes(), ++expect);
    EXPECT_EQ(p.limit(), ch->to);
    EXPECT_EQ(p.source(), ch->source);
  };
  TimePoint now = kT0;
  saw(p.OnQuery(now += seconds(1), 18));
  p.OnRefusal(now += seconds(1), 15);
  saw(p.OnRefusal(now += seconds(1), 15));
  saw(p.Tick(p.NextTick()));
  now = p.changed_at();
  const auto op = p.OnOperator(now += seconds(1), 10);
  ASSERT_TRUE(op.ok());
  saw(op.value());
  // Nothing new: no change, not counted.
  EXPECT_FALSE(p.OnQuery(now += seconds(1), 18));
  const auto same = p.OnOperator(now += seconds(1), 10);
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(same.value());
  EXPECT_EQ(p.changes(), expect);
}

// ---- the test switch ----

TEST(LimitPolicyRatchet, LowersByOneOnEveryRefusalBelowTheLimit) {
  LimitPolicyConfig c = Cfg();
  c.ratchet = true;
  LimitPolicy p(c, kT0);
  TimePoint now = kT0;
  for (std::uint32_t i = 1; i <= 5; ++i) {
    // Isolated and far apart: rule F2 would never lower on these.
    now += std::chrono::hours(1);
    const auto change = p.OnRefusal(now, 15);
    ASSERT_TRUE(change) << i;
    EXPECT_EQ(change->to, 20 - i);
    EXPECT_NE(change->cause.find("ratchet"), std::string::npos);
  }
  EXPECT_EQ(p.limit(), 15u);
  EXPECT_FALSE(p.OnRefusal(now += seconds(1), 15));  // held >= limit: not evidence
}

}  // namespace
}  // namespace dsb::lease
