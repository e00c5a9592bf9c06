// EtcdClient against three real etcd members: the leader killed (calls
// succeed again through failover within a bound, measured and printed), two
// of three killed (writes and linearizable reads never answer "ok"), and
// both restarted (healthy again).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <string>

#include "broker/etcd/etcd_client.h"
#include "tests/etcd/run_sync.h"
#include "tests/support/etcd_cluster.h"

namespace dsb::etcd {
namespace {

using dsb::testing::EtcdCluster;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

Op Put(std::string key, std::string value) {
  return Op{Op::Kind::kPut, std::move(key), std::move(value), 0};
}

class EtcdThreeMembers : public ::testing::Test {
 protected:
  void SetUp() override {
    DSB_SKIP_WITHOUT_ETCD();
    ASSERT_TRUE(cluster_.Start(3)) << cluster_.error();
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return RunSync(io_, std::move(a));
  }
  EtcdCluster cluster_;
  asio::io_context io_;
};

TEST_F(EtcdThreeMembers, KillingTheLeaderFailsOverWithinABound) {
  const int leader = cluster_.Leader();
  ASSERT_GE(leader, 0);
  // The client talks to the leader first, so its loss is felt.
  ClientOptions o = cluster_.Client(2000ms);
  std::swap(o.endpoints[0], o.endpoints[static_cast<std::size_t>(leader)]);
  auto c = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(c.ok());
  auto& client = **c;
  auto w = Run(client.Txn({}, {Put("/fo/k", "0")}));
  ASSERT_TRUE(w.ok()) << w.status().message();
  ASSERT_EQ(client.current_endpoint(), cluster_.Endpoint(leader));

  cluster_.Kill(leader);
  const auto killed = Clock::now();
  // Write until one lands; every failure is unavailable or unknown, never a
  // silent "ok". Bounded: 30 s (an election takes ~1-2 s).
  int failures = 0;
  std::optional<Clock::duration> first_ok;
  for (int i = 0; i < 1000 && Clock::now() - killed < 30s; ++i) {
    auto r = Run(client.Txn({}, {Put("/fo/k", std::to_string(i + 1))}));
    if (r.ok()) {
      first_ok = Clock::now() - killed;
      EXPECT_TRUE(r->succeeded);
      break;
    }
    ++failures;
    std::printf("  after %.3f s: %s\n", Seconds(Clock::now() - killed),
                r.status().message().c_str());
    EXPECT_TRUE(r.status().code() == Errc::kTimeout ||
                r.status().code() == Errc::kBrokerUnavailable)
        << r.status().message();
  }
  ASSERT_TRUE(first_ok) << "no write succeeded within 30 s of killing the leader";
  std::printf("leader killed: first write ok after %.3f s (%d failed calls before), via %s\n",
              Seconds(*first_ok), failures, client.current_endpoint().c_str());
  EXPECT_NE(client.current_endpoint(), cluster_.Endpoint(leader));
  EXPECT_LT(*first_ok, 15s);
  // Reads and lease calls work too, and the new leader is another member.
  auto r = Run(client.RangePrefix("/fo/"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->kvs.size(), 1u);
  auto lease = Run(client.LeaseGrant(5));
  ASSERT_TRUE(lease.ok()) << lease.status().message();
  const int next = cluster_.Leader();
  EXPECT_GE(next, 0);
  EXPECT_NE(next, leader);

  // The old leader comes back as a follower; all three healthy.
  ASSERT_TRUE(cluster_.Restart(leader)) << cluster_.error();
  EXPECT_TRUE(cluster_.WaitHealthy(20s)) << cluster_.error();
}

// A member that takes connections but answers nothing (stopped): one call
// times out on it, the next starts at another member and succeeds.
TEST_F(EtcdThreeMembers, AMemberThatNeverAnswersIsLeftAfterOneTimeout) {
  const int leader = cluster_.Leader();
  ASSERT_GE(leader, 0);
  const int hung = (leader + 1) % 3;  // a follower: the others keep quorum
  ClientOptions o = cluster_.Client(3000ms);  // room for a loaded machine's fsync
  std::swap(o.endpoints[0], o.endpoints[static_cast<std::size_t>(hung)]);
  auto c = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(c.ok());
  auto& client = **c;
  ASSERT_TRUE(Run(client.Txn({}, {Put("/h/k", "0")})).ok());
  ASSERT_EQ(client.current_endpoint(), cluster_.Endpoint(hung));
  cluster_.Pause(hung);
  auto first = Run(client.Txn({}, {Put("/h/k", "1")}));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), Errc::kTimeout) << first.status().message();
  // The next call does not try the stopped member again: had it, it would
  // have timed out there and answered kTimeout (a sent write is never resent
  // elsewhere). No wall-clock bound here (it failed the CI run of 2026-12-06
  // on a loaded machine); the outcome proves it.
  auto second = Run(client.Txn({}, {Put("/h/k", "2")}));
  ASSERT_TRUE(second.ok()) << second.status().message();
  EXPECT_NE(client.current_endpoint(), cluster_.Endpoint(hung));
  auto r = Run(client.Get("/h/k"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "2");
  cluster_.Resume(hung);
  EXPECT_TRUE(cluster_.WaitHealthy(20s)) << cluster_.error();
}

TEST_F(EtcdThreeMembers, WithoutQuorumNothingAnswersOkAndRestartHeals) {
  ClientOptions o = cluster_.Client(1000ms);
  auto c = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(c.ok());
  auto& client = **c;
  auto lease = Run(client.LeaseGrant(5));
  ASSERT_TRUE(lease.ok()) << lease.status().message();
  ASSERT_TRUE(Run(client.Txn({}, {Put("/q/k", "before")})).ok());

  // Kill two members; the third (not necessarily the leader) has no quorum.
  const int survivor = 2;
  cluster_.Kill(0);
  cluster_.Kill(1);
  auto never_ok = [&](const Status& s, const char* what) {
    EXPECT_FALSE(s.ok()) << what << " answered ok without quorum";
    EXPECT_TRUE(s.code() == Errc::kTimeout || s.code() == Errc::kBrokerUnavailable)
        << what << ": " << s.message();
  };
  const auto t0 = Clock::now();
  for (int i = 0; i < 2; ++i) {
    auto w = Run(client.Txn({}, {Put("/q/k", "without quorum")}));
    never_ok(w.status(), "txn");
    auto r = Run(client.RangePrefix("/q/"));
    never_ok(r.status(), "linearizable range");
    never_ok(Run(client.CheckHealth()), "health");
    auto g = Run(client.LeaseGrant(5));
    never_ok(g.status(), "lease grant");
  }
  const double took = Seconds(Clock::now() - t0);
  std::printf("without quorum: 8 calls failed in %.2f s (timeout 1 s each)\n", took);
  EXPECT_LT(took, 8 * 1.0 + 10);
  EXPECT_EQ(client.current_endpoint().empty(), false);
  EXPECT_TRUE(cluster_.alive(survivor));

  // Back: both restarted; the write that may have committed later is visible
  // or not, but the store answers and takes writes again.
  const auto t1 = Clock::now();
  ASSERT_TRUE(cluster_.Restart(0)) << cluster_.error();
  ASSERT_TRUE(cluster_.Restart(1)) << cluster_.error();
  std::printf("restarted two members: healthy after %.2f s\n", Seconds(Clock::now() - t1));
  auto w = Run(client.Txn({}, {Put("/q/k", "after")}));
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto r = Run(client.Get("/q/k"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "after");
}

}  // namespace
}  // namespace dsb::etcd
