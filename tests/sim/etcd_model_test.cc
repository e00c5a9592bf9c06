// The simulation's model of etcd (tests/sim/etcd_model.h): the semantics the
// ledger in etcd relies on and must survive.
#include "tests/sim/etcd_model.h"

#include <gtest/gtest.h>

namespace dsb::sim {
namespace {

constexpr std::int64_t kS = 1'000'000'000;
using F = EtcdCompare::Field;

EtcdTxn Put(const std::string& key, const std::string& value, std::int64_t lease = 0) {
  EtcdTxn t;
  t.success.push_back({true, key, value, lease});
  return t;
}

TEST(EtcdModel, EveryCommittedWriteBumpsTheRevisionAndKeysCarryTheirs) {
  EtcdModel m;
  const std::int64_t r0 = m.revision();
  const auto a = m.Txn(Put("a", "1"));
  ASSERT_TRUE(a.succeeded);
  EXPECT_EQ(a.revision, r0 + 1);
  const auto b = m.Txn(Put("a", "2"));
  EXPECT_EQ(b.revision, r0 + 2);
  const StoredKey& k = m.Range().kvs.at("a");
  EXPECT_EQ(k.value, "2");
  EXPECT_EQ(k.create_revision, r0 + 1);
  EXPECT_EQ(k.mod_revision, r0 + 2);
  EXPECT_EQ(k.version, 2);
}

TEST(EtcdModel, CompareAndSwapAppliesAllOrNothing) {
  EtcdModel m;
  const std::int64_t rev = m.Txn(Put("a", "1")).revision;
  EtcdTxn stale;
  stale.compares.push_back({"a", F::kModRevision, rev - 1});
  stale.success.push_back({true, "a", "x", 0});
  stale.success.push_back({true, "b", "x", 0});
  EXPECT_FALSE(m.Txn(stale).succeeded);
  EXPECT_EQ(m.Range().kvs.count("b"), 0u);
  EXPECT_EQ(m.Range().kvs.at("a").value, "1");
  EtcdTxn fresh = stale;
  fresh.compares[0].value = rev;
  fresh.compares.push_back({"b", F::kCreateRevision, 0});  // absent
  EXPECT_TRUE(m.Txn(fresh).succeeded);
  EXPECT_EQ(m.Range().kvs.at("b").value, "x");
  // The same transaction again loses: "a" moved on (a duplicated write).
  EXPECT_FALSE(m.Txn(fresh).succeeded);
}

TEST(EtcdModel, PutOnAMissingLeaseFailsAndAppliesNothing) {
  EtcdModel m;
  const auto r = m.Txn(Put("live", "x", 0x999));
  EXPECT_FALSE(r.succeeded);
  EXPECT_TRUE(r.lease_not_found);
  EXPECT_TRUE(m.Range().kvs.empty());
}

TEST(EtcdModel, LeaseExpiresItsTtlAfterTheLastKeepAliveOnTheLeadersClock) {
  EtcdModel m;
  const std::int64_t lease = m.LeaseGrant(0, 5);
  ASSERT_TRUE(m.Txn(Put("live", "x", lease)).succeeded);
  EXPECT_EQ(m.NextExpiry(), 5 * kS);
  EXPECT_EQ(m.KeepAlive(3 * kS, lease), 5);
  EXPECT_EQ(m.NextExpiry(), 8 * kS);
  EXPECT_TRUE(m.ExpireDue(8 * kS - 1).empty());
  const auto deleted = m.ExpireDue(8 * kS);
  ASSERT_EQ(deleted.size(), 1u);
  EXPECT_EQ(deleted[0], "live");
  EXPECT_FALSE(m.LeaseExists(lease));
  EXPECT_EQ(m.KeepAlive(9 * kS, lease), std::nullopt);
}

TEST(EtcdModel, TtlBelowTheMinimumIsRaised) {
  EtcdModel m;
  m.LeaseGrant(0, 1);
  EXPECT_EQ(m.NextExpiry(), kMinTtlSeconds * kS);
}

TEST(EtcdModel, WithoutALeaderNothingExpires) {
  EtcdModel m;
  const std::int64_t lease = m.LeaseGrant(0, 2);
  ASSERT_TRUE(m.Txn(Put("live", "x", lease)).succeeded);
  m.LoseLeader();
  EXPECT_FALSE(m.has_leader());
  EXPECT_EQ(m.NextExpiry(), std::nullopt);
  EXPECT_TRUE(m.ExpireDue(100 * kS).empty());
  EXPECT_TRUE(m.LeaseExists(lease));
}

TEST(EtcdModel, ALeaderChangeResetsEveryLeaseToItsFullTtl) {
  EtcdModel m;
  const std::int64_t lease = m.LeaseGrant(0, 10);
  ASSERT_TRUE(m.Txn(Put("live", "x", lease)).succeeded);
  m.LoseLeader();
  // The new leader's clock reads 1000 s (clocks are not compared across
  // machines): the lease ends 10 s from its promotion, however old it was.
  m.ElectLeader(1000 * kS);
  EXPECT_EQ(m.NextExpiry(), 1010 * kS);
  EXPECT_TRUE(m.ExpireDue(1010 * kS - 1).empty());
  EXPECT_EQ(m.ExpireDue(1010 * kS).size(), 1u);
}

TEST(EtcdModel, WipeLosesKeysAndLeasesButRevisionsKeepGrowing) {
  EtcdModel m;
  const std::int64_t lease = m.LeaseGrant(0, 10);
  const std::int64_t rev = m.Txn(Put("a", "1", lease)).revision;
  m.Wipe();
  EXPECT_TRUE(m.Range().kvs.empty());
  EXPECT_FALSE(m.LeaseExists(lease));
  EXPECT_GT(m.revision(), rev);
  EtcdTxn t;
  t.compares.push_back({"a", F::kModRevision, rev});
  EXPECT_FALSE(m.Txn(t).succeeded);
}

}  // namespace
}  // namespace dsb::sim
