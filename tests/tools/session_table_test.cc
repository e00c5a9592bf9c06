// SessionTable with made-up instants: exact cap, peak, time-weighted mean and window reset.
#include "tools/simserver/session_table.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace dsb::sim {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point kT0 = Clock::time_point() + seconds(1000);

TEST(SessionTable, RefusesAtTheLimitAndCountsTheRefusal) {
  SessionTable t(2);
  EXPECT_EQ(t.Open("u", kT0).outcome, SessionTable::OpenOutcome::kOk);
  EXPECT_EQ(t.Open("u", kT0).outcome, SessionTable::OpenOutcome::kOk);
  const auto refused = t.Open("u", kT0);
  EXPECT_EQ(refused.outcome, SessionTable::OpenOutcome::kSessionLimit);
  EXPECT_EQ(refused.limit, 2u);
  const UserStats s = t.Snapshot(kT0).at("u");
  EXPECT_EQ(s.current, 2u);
  EXPECT_EQ(s.opened, 2u);
  EXPECT_EQ(s.refused, 1u);
  EXPECT_EQ(s.peak, 2u);
  EXPECT_EQ(s.over_limit_events, 0u);
}

TEST(SessionTable, SessionIdsAreUniqueAndCloseOnlyOnce) {
  SessionTable t(10);
  const auto a = t.Open("u", kT0);
  const auto b = t.Open("v", kT0);
  EXPECT_NE(a.session_id, b.session_id);
  EXPECT_TRUE(t.Close(a.session_id, kT0));
  EXPECT_FALSE(t.Close(a.session_id, kT0));
  EXPECT_FALSE(t.Close(12345, kT0));
  EXPECT_EQ(t.Snapshot(kT0).at("u").current, 0u);
  EXPECT_EQ(t.Snapshot(kT0).at("v").current, 1u);
  EXPECT_EQ(t.open_sessions(), 1u);
}

TEST(SessionTable, MeanIsTheTimeWeightedConcurrency) {
  SessionTable t(10);
  // 1 session for 2 s, then 3 sessions for 1 s, then 0 for 1 s: area 2 + 3 = 5 over 4 s.
  const auto first = t.Open("u", kT0);
  t.Open("u", kT0 + seconds(2));
  const auto third = t.Open("u", kT0 + seconds(2));
  t.Close(first.session_id, kT0 + seconds(3));
  t.Close(third.session_id, kT0 + seconds(3));
  // one left open: close it too
  const UserStats mid = t.Snapshot(kT0 + seconds(3)).at("u");
  EXPECT_DOUBLE_EQ(mid.mean, 5.0 / 3.0);
  EXPECT_EQ(mid.current, 1u);
  const UserStats end = t.Snapshot(kT0 + seconds(4)).at("u");
  EXPECT_DOUBLE_EQ(end.mean, 6.0 / 4.0);  // the last session kept counting for the 4th second
  EXPECT_DOUBLE_EQ(end.window_s, 4.0);
  EXPECT_EQ(end.peak, 3u);
}

TEST(SessionTable, WindowStartsAtTheFirstOpen) {
  SessionTable t(1);
  t.SetLimit("late", 1, kT0);  // known, but no window yet
  EXPECT_DOUBLE_EQ(t.Snapshot(kT0 + seconds(5)).at("late").mean, 0.0);
  t.Open("late", kT0 + seconds(10));
  EXPECT_DOUBLE_EQ(t.Snapshot(kT0 + seconds(12)).at("late").mean, 1.0);
}

TEST(SessionTable, ResetWindowKeepsCurrentAndRestartsTheRest) {
  SessionTable t(2);
  const auto a = t.Open("u", kT0);
  t.Open("u", kT0);
  t.Open("u", kT0);  // refused
  t.Close(a.session_id, kT0 + seconds(1));
  t.ResetWindow(kT0 + seconds(10));
  const UserStats s = t.Snapshot(kT0 + seconds(12)).at("u");
  EXPECT_EQ(s.current, 1u);
  EXPECT_EQ(s.peak, 1u);
  EXPECT_EQ(s.opened, 0u);
  EXPECT_EQ(s.refused, 0u);
  EXPECT_DOUBLE_EQ(s.mean, 1.0);
  EXPECT_DOUBLE_EQ(s.window_s, 2.0);
}

TEST(SessionTable, LoweringTheLimitKeepsOpenSessionsAndRefusesNewOnes) {
  SessionTable t(3);
  for (int i = 0; i < 3; ++i) t.Open("u", kT0);
  ASSERT_TRUE(t.SetLimit("u", 1, kT0));
  EXPECT_EQ(t.Open("u", kT0).outcome, SessionTable::OpenOutcome::kSessionLimit);
  const UserStats s = t.Snapshot(kT0).at("u");
  EXPECT_EQ(s.current, 3u);
  EXPECT_EQ(s.limit, 1u);
  EXPECT_EQ(s.over_limit_events, 0u);  // only opens past the cap count
}

TEST(SessionTable, BoundsTheNumberOfUsers) {
  SessionTable t(1);
  for (std::size_t i = 0; i < SessionTable::kMaxUsers; ++i) {
    ASSERT_EQ(t.Open("u" + std::to_string(i), kT0).outcome, SessionTable::OpenOutcome::kOk);
  }
  EXPECT_EQ(t.Open("one-too-many", kT0).outcome, SessionTable::OpenOutcome::kTooManyUsers);
  EXPECT_FALSE(t.SetLimit("one-too-many", 5, kT0));
  EXPECT_EQ(t.Open("u0", kT0).outcome, SessionTable::OpenOutcome::kSessionLimit);
}

TEST(SessionTable, StatsJsonHasTheDocumentedShape) {
  SessionTable t(32);
  t.Open("svc \"x\"", kT0);  // names are escaped, not spliced
  const boost::json::value v = boost::json::parse(t.StatsJson(kT0 + seconds(1)));
  const auto& u = v.at("users").at("svc \"x\"").as_object();
  for (const char* key : {"peak", "mean", "opened", "refused", "current", "limit",
                          "over_limit_events", "peak_over_limit", "window_s"}) {
    EXPECT_TRUE(u.contains(key)) << key;
  }
  EXPECT_EQ(u.at("limit").to_number<int>(), 32);
  EXPECT_EQ(v.at("open_sessions").to_number<int>(), 1);
}

}  // namespace
}  // namespace dsb::sim
