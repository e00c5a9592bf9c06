// The limit records beside the etcd ledger and the keeper's bound on what dsb
// held at a refusal (broker/etcd/limit_records.h).
#include "broker/etcd/limit_records.h"

#include <gtest/gtest.h>

namespace dsb::etcd {
namespace {

using namespace std::chrono_literals;
using lease::LimitSource;

TEST(LimitRecords, LimitRoundTripsWithItsSourceBaseAndRecentChanges) {
  StoredLimit r;
  r.limit = 12;
  r.source = LimitSource::kDiscovered;
  r.base = 20;
  r.base_source = LimitSource::kOperator;
  r.changed_at_unix_ms = 1700000000123;
  r.writer = "ws1";
  r.recent.push_back({1700000000123, 13, 12, LimitSource::kDiscovered, "2 refusals", "broker ws2"});
  auto back = DecodeLimit(LimitKey("exch"), EncodeLimit(r));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->limit, 12u);
  EXPECT_EQ(back->source, LimitSource::kDiscovered);
  EXPECT_EQ(back->base, 20u);
  EXPECT_EQ(back->base_source, LimitSource::kOperator);
  EXPECT_EQ(back->changed_at_unix_ms, 1700000000123);
  EXPECT_EQ(back->writer, "ws1");
  ASSERT_EQ(back->recent.size(), 1u);
  EXPECT_EQ(back->recent[0].from, 13u);
  EXPECT_EQ(back->recent[0].who, "broker ws2");
}

TEST(LimitRecords, DamagedLimitIsAProtocolErrorNamingTheKey) {
  const std::string key = LimitKey("exch");
  for (const char* text :
       {"", "{", "[]", "{\"v\":2,\"limit\":5,\"source\":\"config\",\"base\":5,\"base_source\":\"config\"}",
        "{\"v\":1,\"limit\":0,\"source\":\"config\",\"base\":5,\"base_source\":\"config\"}",
        "{\"v\":1,\"limit\":70000,\"source\":\"config\",\"base\":5,\"base_source\":\"config\"}",
        "{\"v\":1,\"limit\":5,\"source\":\"guess\",\"base\":5,\"base_source\":\"config\"}",
        "{\"v\":1,\"limit\":5,\"source\":\"config\",\"base_source\":\"config\"}",
        "{\"v\":1,\"limit\":\"5\",\"source\":\"config\",\"base\":5,\"base_source\":\"config\"}"}) {
    auto r = DecodeLimit(key, text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), Errc::kProtocol) << text;
    EXPECT_NE(r.status().message().find(key), std::string::npos) << r.status().message();
  }
}

TEST(LimitRecords, WithChangePutsTheNewestFirstAndKeepsTen) {
  StoredLimit r;
  r.limit = 30;
  r.base = 30;
  for (std::uint32_t i = 0; i < 15; ++i) {
    lease::LimitChange c{30 - i, 29 - i, LimitSource::kDiscovered, "refusals"};
    r = WithChange(r, c, 30, LimitSource::kConfig, 1000 + i, "broker ws2", "ws1");
  }
  EXPECT_EQ(r.limit, 15u);
  EXPECT_EQ(r.source, LimitSource::kDiscovered);
  ASSERT_EQ(r.recent.size(), StoredLimit::kRecentChanges);
  EXPECT_EQ(r.recent.front().to, 15u);
  EXPECT_EQ(r.recent.front().at_unix_ms, 1014);
}

TEST(LimitRecords, RefusalKeyRoundTripsAndOtherTextIsNotOne) {
  RefusalName n{"ws-2.a_b", 7, 18446744073709551615ull, 42};
  const std::string key = RefusalKey(n);
  EXPECT_EQ(key, "refusal/ws-2.a_b/7/18446744073709551615/42");
  auto back = ParseRefusalKey(key);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->broker_id, n.broker_id);
  EXPECT_EQ(back->epoch, 7u);
  EXPECT_EQ(back->instance, n.instance);
  EXPECT_EQ(back->seq, 42u);
  for (const char* bad : {"refusal/", "refusal/ws1/1/2", "refusal/ws1/1/2/3/4", "refusal/ws 1/1/2/3",
                          "refusal/ws1/x/2/3", "refusal/ws1/1/2/-3", "live/ws1/1/2/3",
                          "refusal/ws1/1/2/99999999999999999999999"}) {
    EXPECT_FALSE(ParseRefusalKey(bad).has_value()) << bad;
  }
}

TEST(LimitRecords, RefusalValueIsCheckedNamingTheKey) {
  auto r = DecodeRefusal("refusal/a/1/1/1", EncodeRefusal({"exch", 9, 3}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->target, "exch");
  EXPECT_EQ(r->held, 9u);
  EXPECT_EQ(r->refusals, 3u);
  for (const char* text : {"{\"v\":1,\"target\":\"\",\"held\":1,\"refusals\":1}",
                           "{\"v\":1,\"target\":\"t\",\"held\":-1,\"refusals\":1}",
                           "{\"v\":1,\"target\":\"t\",\"held\":1,\"refusals\":0}", "nonsense"}) {
    auto bad = DecodeRefusal("refusal/a/1/1/1", text);
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_NE(bad.status().message().find("refusal/a/1/1/1"), std::string::npos);
  }
}

TEST(LimitRecords, KeeperValueRoundTripsFullSixtyFourBitInstance) {
  KeeperValue k{"ws1", 3, 0xFFFFFFFFFFFFFFF1ull};
  auto back = DecodeKeeper(EncodeKeeper(k));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, k);
  EXPECT_FALSE(DecodeKeeper("{\"v\":1,\"broker\":\"a/b\",\"epoch\":\"1\",\"instance\":\"1\"}").ok());
  EXPECT_FALSE(DecodeKeeper("{\"v\":1,\"broker\":\"a\",\"epoch\":1,\"instance\":\"1\"}").ok());
}

// A snapshot of one target "exch" with (broker, owed, counted, in_file) rows.
struct Row {
  std::string id;
  std::uint32_t owed;
  std::uint32_t counted = 0;
};
lease::LedgerSnapshot Snap(std::vector<Row> rows, bool learning = false) {
  lease::LedgerSnapshot s;
  s.learning = learning;
  lease::TargetLeaseView t;
  t.target = "exch";
  for (const Row& r : rows) {
    lease::BrokerLeaseView b;
    b.broker_id = r.id;
    b.owed = r.owed;
    b.counted = r.counted;
    t.brokers.push_back(b);
  }
  s.targets.push_back(t);
  return s;
}

lease::LedgerConfig Mine() {
  lease::LedgerConfig c;
  c.targets.push_back({"exch", 10, 16});
  c.brokers.push_back({"ws1", 1, {1}, {2}});
  c.brokers.push_back({"ws2", 1, {1}, {0}});
  c.brokers.push_back({"ws3", 1, {1}, {1}});
  return c;
}

TEST(OwedHistory, KeepsAFallForTheHorizonAndNothingIsKnownBeforeIt) {
  const lease::TimePoint t0{};
  OwedHistory h(250ms);
  h.Observe(Snap({{"ws2", 6}}), t0);
  EXPECT_FALSE(h.Covers(t0 + 100ms));
  h.Observe(Snap({{"ws2", 1}}), t0 + 260ms);
  EXPECT_TRUE(h.Covers(t0 + 260ms));
  EXPECT_EQ(h.Peak("exch", "ws2", t0 + 260ms), 6u);  // the fall is recent
  EXPECT_EQ(h.Peak("exch", "ws2", t0 + 500ms), 6u);
  h.Observe(Snap({{"ws2", 1}}), t0 + 520ms);
  EXPECT_EQ(h.Peak("exch", "ws2", t0 + 520ms), 1u);  // older than the horizon
  // A broker the snapshot no longer lists (forgotten) fell to 0: kept as a fall.
  h.Observe(Snap({}), t0 + 600ms);
  EXPECT_EQ(h.Peak("exch", "ws2", t0 + 600ms), 1u);
  EXPECT_EQ(h.Peak("exch", "ws2", t0 + 900ms), 0u);
  EXPECT_EQ(h.Peak("exch", "nobody", t0), 0u);
}

TEST(HeldAtRefusal, CountsTheReporterOthersAllowanceAndTheirPeakOwed) {
  const lease::TimePoint t0{};
  OwedHistory h(250ms);
  const auto mine = Mine();
  h.Observe(Snap({{"ws1", 2}, {"ws2", 5}, {"ws3", 3}}), t0);
  h.Observe(Snap({{"ws1", 2}, {"ws2", 1}, {"ws3", 3}}), t0 + 300ms);
  // ws2 fell from 5 to 1 just now: a report in flight may describe 5.
  const auto s = Snap({{"ws1", 2}, {"ws2", 1}, {"ws3", 3}});
  // reporter ws1 held 7; others' allowance: ws2 1+0, ws3 1+1 = 3; owed 5 + 3.
  EXPECT_EQ(HeldAtRefusal(mine, s, false, h, "exch", "ws1", 7, t0 + 300ms), 7u + 3 + 5 + 3);
  // Past the horizon the fall no longer counts.
  h.Observe(s, t0 + 600ms);
  EXPECT_EQ(HeldAtRefusal(mine, s, false, h, "exch", "ws1", 7, t0 + 600ms), 7u + 3 + 1 + 3);
}

TEST(HeldAtRefusal, IsNoEvidenceWhileLearningOrBeforeTheHistoryCoversTheHorizon) {
  const lease::TimePoint t0{};
  OwedHistory h(250ms);
  const auto mine = Mine();
  const auto s = Snap({{"ws1", 2}});
  h.Observe(s, t0);
  // A new keeper: a fall just before it started reading is unknown to it.
  EXPECT_EQ(HeldAtRefusal(mine, s, false, h, "exch", "ws1", 3, t0 + 10ms), UINT32_MAX);
  h.Observe(s, t0 + 300ms);
  EXPECT_NE(HeldAtRefusal(mine, s, false, h, "exch", "ws1", 3, t0 + 300ms), UINT32_MAX);
  EXPECT_EQ(HeldAtRefusal(mine, s, true, h, "exch", "ws1", 3, t0 + 300ms), UINT32_MAX);
  EXPECT_EQ(HeldAtRefusal(mine, Snap({{"ws1", 2}}, true), false, h, "exch", "ws1", 3, t0 + 300ms),
            UINT32_MAX);
  EXPECT_EQ(HeldAtRefusal(mine, s, false, h, "other", "ws1", 3, t0 + 300ms), UINT32_MAX);
}

TEST(HeldAtRefusal, CountsARemovedBrokerTheStoredLedgerStillCounts) {
  const lease::TimePoint t0{};
  OwedHistory h(250ms);
  const auto mine = Mine();
  const auto s = Snap({{"ws1", 0}, {"old", 2, 4}});
  h.Observe(s, t0);
  h.Observe(s, t0 + 300ms);
  // reporter ws2 held 1; ws1 1+2, ws3 1+1; removed "old": counted 4 + owed 2.
  EXPECT_EQ(HeldAtRefusal(mine, s, false, h, "exch", "ws2", 1, t0 + 300ms), 1u + 3 + 2 + 4 + 2);
}

}  // namespace
}  // namespace dsb::etcd
