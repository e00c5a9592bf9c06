// EtcdClient (broker/etcd/etcd_client.h) against real etcd members started by
// EtcdCluster: one member for the calls and their outcomes, TLS with client
// certificates, and a failing endpoint or a silent server for the
// outcome model (refused = unavailable, silence = timeout = unknown).
// The three-member cases are in etcd_failover_test.cc.
#include "broker/etcd/etcd_client.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/etcd/run_sync.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/ports.h"

namespace dsb::etcd {
namespace {

using dsb::testing::EtcdCluster;
using namespace std::chrono_literals;
namespace asio = boost::asio;

Op Put(std::string key, std::string value, std::int64_t lease = 0) {
  return Op{Op::Kind::kPut, std::move(key), std::move(value), lease};
}
Op Del(std::string key) { return Op{Op::Kind::kDelete, std::move(key), {}, 0}; }
Compare ModIs(std::string key, std::int64_t rev) {
  return Compare{std::move(key), Compare::Field::kModRevision, rev, {}};
}

class EtcdOneMember : public ::testing::Test {
 protected:
  void SetUp() override {
    DSB_SKIP_WITHOUT_ETCD();
    ASSERT_TRUE(cluster_.Start(1)) << cluster_.error();
    auto c = EtcdClient::Create(io_.get_executor(), cluster_.Client());
    ASSERT_TRUE(c.ok()) << c.status().message();
    client_ = std::move(*c);
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return RunSync(io_, std::move(a));
  }

  EtcdCluster cluster_;
  asio::io_context io_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(EtcdOneMember, RangeReturnsEveryKeyUnderThePrefixAtOneRevision) {
  // Keys with bytes that need base64 (0xff, NUL) and one just outside the prefix.
  const std::string odd = std::string("/t/b\xff", 5) + std::string(1, '\0');
  auto w = Run(client_->Txn(
      {}, {Put("/t/a", "1"), Put(odd, std::string("v\0w", 3)), Put("/t0", "outside")}));
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_TRUE(w->succeeded);  // no compare: the success branch runs
  auto r = Run(client_->RangePrefix("/t/"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->revision, w->revision);
  EXPECT_NE(r->cluster_id, 0u);  // names the store: a rebuilt one has another id
  EXPECT_EQ(r->cluster_id, w->cluster_id);
  ASSERT_EQ(r->kvs.size(), 2u);
  EXPECT_EQ(r->kvs[0].key, "/t/a");
  EXPECT_EQ(r->kvs[0].value, "1");
  EXPECT_EQ(r->kvs[0].mod_revision, w->revision);
  EXPECT_EQ(r->kvs[0].create_revision, w->revision);
  EXPECT_EQ(r->kvs[0].version, 1);
  EXPECT_EQ(r->kvs[1].key, odd);
  EXPECT_EQ(r->kvs[1].value, std::string("v\0w", 3));

  auto one = Run(client_->Get("/t0"));
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->kvs.size(), 1u);
  EXPECT_EQ(one->kvs[0].value, "outside");
  auto none = Run(client_->Get("/absent"));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->kvs.empty());
  EXPECT_EQ(none->revision, w->revision);
}

TEST_F(EtcdOneMember, TxnIsACompareAndSwapAndALostCompareChangesNothing) {
  // Create only if absent (mod_revision 0).
  auto created = Run(client_->Txn({ModIs("/cas", 0)}, {Put("/cas", "first")}));
  ASSERT_TRUE(created.ok()) << created.status().message();
  ASSERT_TRUE(created->succeeded);
  auto again = Run(client_->Txn({ModIs("/cas", 0)}, {Put("/cas", "second")}));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->succeeded);  // lost: the key exists

  const std::int64_t rev = created->revision;
  auto swapped = Run(client_->Txn({ModIs("/cas", rev)}, {Put("/cas", "swapped")}));
  ASSERT_TRUE(swapped.ok());
  EXPECT_TRUE(swapped->succeeded);
  // The same guard again is stale now: lost, and the failure branch runs.
  auto stale =
      Run(client_->Txn({ModIs("/cas", rev)}, {Put("/cas", "stale")}, {Put("/cas-lost", "yes")}));
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->succeeded);
  EXPECT_EQ(stale->revision, swapped->revision + 1);  // the failure put
  auto r = Run(client_->Get("/cas"));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "swapped");

  // Value, version and create_revision guards; then a delete.
  auto by_value = Run(client_->Txn({Compare{"/cas", Compare::Field::kValue, 0, "swapped"},
                                    Compare{"/cas", Compare::Field::kVersion, 2, {}},
                                    Compare{"/cas", Compare::Field::kCreateRevision, rev, {}}},
                                   {Del("/cas")}));
  ASSERT_TRUE(by_value.ok());
  EXPECT_TRUE(by_value->succeeded);
  auto gone = Run(client_->Get("/cas"));
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->kvs.empty());
  auto wrong_value =
      Run(client_->Txn({Compare{"/cas-lost", Compare::Field::kValue, 0, "no"}}, {Put("/x", "y")}));
  ASSERT_TRUE(wrong_value.ok());
  EXPECT_FALSE(wrong_value->succeeded);
}

TEST_F(EtcdOneMember, LeaseGrantKeepAliveTimeToLiveRevoke) {
  auto lease = Run(client_->LeaseGrant(5));
  ASSERT_TRUE(lease.ok()) << lease.status().message();
  EXPECT_NE(lease->id, 0);
  EXPECT_EQ(lease->ttl_s, 5);
  auto ka = Run(client_->KeepAlive(lease->id));
  ASSERT_TRUE(ka.ok()) << ka.status().message();
  ASSERT_TRUE(ka->has_value());
  EXPECT_EQ(**ka, 5);
  auto ttl = Run(client_->TimeToLive(lease->id));
  ASSERT_TRUE(ttl.ok()) << ttl.status().message();
  ASSERT_TRUE(ttl->has_value());
  EXPECT_GE(**ttl, 3);
  EXPECT_LE(**ttl, 5);

  // A key on the lease, a guard on its lease, then revoke removes it.
  auto put = Run(client_->Txn({}, {Put("/live/b1", "x", lease->id)}));
  ASSERT_TRUE(put.ok()) << put.status().message();
  auto guarded = Run(client_->Txn({Compare{"/live/b1", Compare::Field::kLease, lease->id, {}}},
                                  {Put("/ledger", "v")}));
  ASSERT_TRUE(guarded.ok());
  EXPECT_TRUE(guarded->succeeded);
  auto r = Run(client_->Get("/live/b1"));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].lease, lease->id);

  ASSERT_TRUE(Run(client_->LeaseRevoke(lease->id)).ok());
  auto after = Run(client_->Get("/live/b1"));
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->kvs.empty());
  // A dead lease: keepalive and time-to-live say it is gone; revoking it
  // again is done; a put on it is refused by etcd.
  auto dead_ka = Run(client_->KeepAlive(lease->id));
  ASSERT_TRUE(dead_ka.ok()) << dead_ka.status().message();
  EXPECT_FALSE(dead_ka->has_value());
  auto dead_ttl = Run(client_->TimeToLive(lease->id));
  ASSERT_TRUE(dead_ttl.ok());
  EXPECT_FALSE(dead_ttl->has_value());
  EXPECT_TRUE(Run(client_->LeaseRevoke(lease->id)).ok());
  auto refused = Run(client_->Txn({}, {Put("/live/b1", "x", lease->id)}));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Errc::kConflict);
  EXPECT_NE(refused.status().message().find("lease not found"), std::string::npos)
      << refused.status().message();
}

TEST_F(EtcdOneMember, WatchSeesPutsDeletesAndLeaseExpiryAsDelete) {
  auto lease = Run(client_->LeaseGrant(2));  // etcd's minimum TTL
  ASSERT_TRUE(lease.ok()) << lease.status().message();
  auto start = Run(client_->Get("/w/"));
  ASSERT_TRUE(start.ok());
  // From the next revision on: a put, a delete, a put on the lease which
  // then expires (no keepalive), and a key outside the prefix never seen.
  ASSERT_TRUE(Run(client_->Txn({}, {Put("/w/a", "1")})).ok());
  ASSERT_TRUE(Run(client_->Txn({}, {Put("/other", "1")})).ok());
  ASSERT_TRUE(Run(client_->Txn({}, {Del("/w/a")})).ok());
  ASSERT_TRUE(Run(client_->Txn({}, {Put("/w/live", "1", lease->id)})).ok());

  std::vector<WatchEvent> seen;
  const auto t0 = std::chrono::steady_clock::now();
  // Bounded: a 2 s lease expires within a few seconds; 20 s is the failure.
  asio::steady_timer bound(io_, 20s);
  bound.async_wait([&](boost::system::error_code ec) {
    if (!ec) client_->Cancel();
  });
  auto s = Run(client_->Watch("/w/", start->revision + 1, [&](const WatchEvent& e) {
    seen.push_back(e);
    return seen.size() < 4;
  }));
  bound.cancel();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(s.ok()) << s.message() << " after " << seen.size() << " events";
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].type, WatchEvent::Type::kPut);
  EXPECT_EQ(seen[0].kv.key, "/w/a");
  EXPECT_EQ(seen[0].kv.value, "1");
  EXPECT_EQ(seen[1].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(seen[1].kv.key, "/w/a");
  EXPECT_EQ(seen[2].type, WatchEvent::Type::kPut);
  EXPECT_EQ(seen[2].kv.key, "/w/live");
  EXPECT_EQ(seen[2].kv.lease, lease->id);
  EXPECT_EQ(seen[3].type, WatchEvent::Type::kDelete);  // the lease expired
  EXPECT_EQ(seen[3].kv.key, "/w/live");
  EXPECT_GT(seen[3].kv.mod_revision, seen[2].kv.mod_revision);
  std::printf("lease of 2 s expired and its DELETE arrived %.2f s after the watch began\n", waited);
  // A put on the expired lease is refused.
  auto refused = Run(client_->Txn({}, {Put("/w/live", "again", lease->id)}));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Errc::kConflict);
  auto ka = Run(client_->KeepAlive(lease->id));
  ASSERT_TRUE(ka.ok());
  EXPECT_FALSE(ka->has_value());
}

TEST_F(EtcdOneMember, CompactionRefusesAWatchFromBeforeItAndMayBeRepeated) {
  auto first = Run(client_->Txn({}, {Put("/c/k", "1")}));
  ASSERT_TRUE(first.ok()) << first.status().message();
  auto second = Run(client_->Txn({}, {Put("/c/k", "2")}));
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(Run(client_->Compact(second->revision)).ok());
  // Again, and to an older revision: already done, so Ok.
  EXPECT_TRUE(Run(client_->Compact(second->revision)).ok());
  EXPECT_TRUE(Run(client_->Compact(first->revision)).ok());
  // A future revision is refused.
  auto future = Run(client_->Compact(second->revision + 1000));
  EXPECT_EQ(future.code(), Errc::kConflict) << future.message();
  // The current value is still there.
  auto r = Run(client_->Get("/c/k"));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "2");
  // A watch from before the compaction is refused, naming it; from it, works.
  int events = 0;
  auto w = Run(client_->Watch("/c/", first->revision, [&](const WatchEvent&) {
    ++events;
    return false;
  }));
  EXPECT_EQ(w.code(), Errc::kConflict) << w.message();
  EXPECT_NE(w.message().find("compacted"), std::string::npos) << w.message();
  EXPECT_NE(w.message().find(std::to_string(second->revision)), std::string::npos) << w.message();
  EXPECT_EQ(events, 0);
  auto from = Run(client_->Watch("/c/", second->revision, [&](const WatchEvent& e) {
    EXPECT_EQ(e.kv.value, "2");
    ++events;
    return false;
  }));
  EXPECT_TRUE(from.ok()) << from.message();
  EXPECT_EQ(events, 1);
}

TEST_F(EtcdOneMember, CheckHealthAndStatusNameTheMember) {
  EXPECT_TRUE(Run(client_->CheckHealth()).ok());
  EXPECT_EQ(client_->current_endpoint(), cluster_.Endpoint(0));
  auto st = Run(client_->StatusOf(0));
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_NE(st->member_id, 0u);
  EXPECT_EQ(st->leader, st->member_id);
  EXPECT_EQ(st->version.substr(0, 2), "3.");
  EXPECT_EQ(cluster_.Leader(), 0);
  // Another store (a rebuilt cluster) answers with another cluster id.
  EtcdCluster other;
  ASSERT_TRUE(other.Start(1)) << other.error();
  auto c2 = EtcdClient::Create(io_.get_executor(), other.Client());
  ASSERT_TRUE(c2.ok());
  auto mine = Run(client_->Get("/x"));
  auto theirs = Run((*c2)->Get("/x"));
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_NE(mine->cluster_id, theirs->cluster_id);
}

// 200 calls of each kind in a row on the kept-alive connections: a figure for
// the docs (printed), bounded in count; a loose bound only catches a hang.
TEST_F(EtcdOneMember, RepeatedCallsAllSucceedAndTheirCostIsPrinted) {
  constexpr int kCalls = 200;
  auto lease = Run(client_->LeaseGrant(10));
  ASSERT_TRUE(lease.ok()) << lease.status().message();
  auto time = [&](const char* what, auto call) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(call(i)) << what << " #" << i;
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
        kCalls;
    std::printf("%-34s %.2f ms per call (%d calls)\n", what, ms, kCalls);
    EXPECT_LT(ms, 100.0) << what;
  };
  std::int64_t rev = 0;
  time("compare-and-swap txn (1 key)", [&](int i) {
    auto r = Run(client_->Txn({ModIs("/perf", rev)}, {Put("/perf", std::to_string(i))}));
    if (!r.ok() || !r->succeeded) return false;
    rev = r->revision;
    return true;
  });
  time("prefix range (1 key)", [&](int) { return Run(client_->RangePrefix("/perf")).ok(); });
  time("lease keepalive", [&](int) {
    auto k = Run(client_->KeepAlive(lease->id));
    return k.ok() && k->has_value();
  });
}

TEST_F(EtcdOneMember, FailsOverFromARefusingEndpointAndRemembersTheOneThatAnswered) {
  dsb::testing::PortReservation nothing;  // bound, never listening: connect is refused
  ASSERT_TRUE(nothing.ok());
  ClientOptions o = cluster_.Client();
  o.endpoints.insert(o.endpoints.begin(), "http://" + nothing.address());
  auto c = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(c.ok());
  auto w = Run((*c)->Txn({}, {Put("/fo", "1")}));
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ((*c)->current_endpoint(), cluster_.Endpoint(0));
}

// A server that accepts, reads the request and closes without answering (a
// member that died while serving it): what it got may have been committed.
class HangUpServer {
 public:
  HangUpServer() {
    fd_ = dsb::testing::ListenOnLoopback(&port_);
    if (fd_ >= 0) thread_ = std::thread([this] { Serve(); });
  }
  ~HangUpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::string url() const { return "http://127.0.0.1:" + port_; }
  int requests() const { return requests_; }

 private:
  void Serve() {
    while (!stop_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      if (::recv(c, buf, sizeof buf, 0) > 0) ++requests_;
      ::close(c);
    }
  }
  int fd_ = -1;
  std::string port_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
};

TEST_F(EtcdOneMember, AWriteCutOffAfterSendingIsUnknownAndNotResentAReadFailsOver) {
  HangUpServer hangup;
  ASSERT_TRUE(hangup.ok());
  ClientOptions o = cluster_.Client();
  o.endpoints.insert(o.endpoints.begin(), hangup.url());
  auto c = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(c.ok());
  auto w = Run((*c)->Txn({}, {Put("/cut", "1")}));
  ASSERT_FALSE(w.ok()) << "a write whose connection broke after sending answered ok";
  EXPECT_EQ(w.status().code(), Errc::kTimeout) << w.status().message();
  EXPECT_NE(w.status().message().find("unknown"), std::string::npos) << w.status().message();
  EXPECT_EQ(hangup.requests(), 1);
  // Not sent again to the next endpoint: etcd never saw it.
  auto r = Run(client_->Get("/cut"));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->kvs.empty());
  // A read has no effect: it goes on to the next endpoint, which answers.
  auto read = Run((*c)->RangePrefix("/"));
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ((*c)->current_endpoint(), cluster_.Endpoint(0));
}

// Timing and outcomes without etcd: refused, silent, cancelled, bad URLs.
class EtcdOutcome : public ::testing::Test {
 protected:
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return RunSync(io_, std::move(a));
  }
  std::unique_ptr<EtcdClient> Make(std::vector<std::string> endpoints,
                                   std::chrono::milliseconds timeout = 500ms) {
    ClientOptions o;
    o.endpoints = std::move(endpoints);
    o.call_timeout = timeout;
    auto c = EtcdClient::Create(io_.get_executor(), o);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }
  asio::io_context io_;
};

TEST_F(EtcdOutcome, RefusedEverywhereIsUnavailableNamingEachEndpoint) {
  dsb::testing::PortReservation a, b;
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = Make({"http://" + a.address(), "http://" + b.address()});
  ASSERT_TRUE(c);
  auto w = Run(c->Txn({}, {Put("/k", "v")}));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Errc::kBrokerUnavailable) << w.status().message();
  EXPECT_NE(w.status().message().find(a.address()), std::string::npos) << w.status().message();
  EXPECT_NE(w.status().message().find(b.address()), std::string::npos) << w.status().message();
  auto h = Run(c->CheckHealth());
  EXPECT_EQ(h.code(), Errc::kBrokerUnavailable);
}

TEST_F(EtcdOutcome, ASilentServerIsATimeoutAndAWriteSaysItsOutcomeIsUnknown) {
  // A listening socket nobody accepts on: the kernel completes the connect
  // (backlog) and the request is sent, but no answer ever comes.
  std::string port;
  const int fd = dsb::testing::ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  auto c = Make({"http://127.0.0.1:" + port}, 400ms);
  ASSERT_TRUE(c);
  const auto t0 = std::chrono::steady_clock::now();
  auto w = Run(c->Txn({}, {Put("/k", "v")}));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Errc::kTimeout);
  EXPECT_NE(w.status().message().find("unknown"), std::string::npos) << w.status().message();
  EXPECT_GE(took, 390ms);
  EXPECT_LT(took, 5s);
  auto r = Run(c->RangePrefix("/"));
  EXPECT_EQ(r.status().code(), Errc::kTimeout);
  auto g = Run(c->LeaseGrant(5));
  EXPECT_EQ(g.status().code(), Errc::kTimeout);
  ::close(fd);
}

TEST_F(EtcdOutcome, CancelEndsACallInFlight) {
  std::string port;
  const int fd = dsb::testing::ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  auto c = Make({"http://127.0.0.1:" + port}, 30s);
  ASSERT_TRUE(c);
  asio::steady_timer t(io_, 100ms);
  t.async_wait([&](boost::system::error_code) { c->Cancel(); });
  const auto t0 = std::chrono::steady_clock::now();
  auto r = Run(c->RangePrefix("/"));
  EXPECT_EQ(r.status().code(), Errc::kCancelled) << r.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  ::close(fd);
}

TEST_F(EtcdOutcome, BadEndpointsAreConfigErrorsNamingThem) {
  for (const std::string bad :
       {"127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:0", "http://127.0.0.1:99999",
        "http://:2379", "ftp://127.0.0.1:2379", "http://127.0.0.1:2379/v3", "http://[::1:2379",
        "http://127.0.0.1:23a9"}) {
    ClientOptions o;
    o.endpoints = {"http://127.0.0.1:2379", bad};
    auto c = EtcdClient::Create(io_.get_executor(), o);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), Errc::kConfig) << bad;
    EXPECT_NE(c.status().message().find("\"" + bad + "\""), std::string::npos)
        << c.status().message();
  }
  for (const std::string good :
       {"http://127.0.0.1:2379", "http://localhost:2379/", "http://[::1]:2379"}) {
    ClientOptions o;
    o.endpoints = {good};
    EXPECT_TRUE(EtcdClient::Create(io_.get_executor(), o).ok()) << good;
  }
  ClientOptions none;
  EXPECT_EQ(EtcdClient::Create(io_.get_executor(), none).status().code(), Errc::kConfig);
  ClientOptions https_without_files;
  https_without_files.endpoints = {"https://127.0.0.1:2379"};
  auto c = EtcdClient::Create(io_.get_executor(), https_without_files);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Errc::kConfig);
  ClientOptions missing_file = https_without_files;
  missing_file.tls = TlsFiles{"/nonexistent/ca.pem", "/nonexistent/c.pem", "/nonexistent/k.pem"};
  c = EtcdClient::Create(io_.get_executor(), missing_file);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/nonexistent/ca.pem"), std::string::npos)
      << c.status().message();
}

// TLS with client certificates (etcd --client-cert-auth).
class EtcdTls : public ::testing::Test {
 protected:
  void SetUp() override {
    DSB_SKIP_WITHOUT_ETCD();
    ASSERT_TRUE(cluster_.Start(1, /*tls=*/true)) << cluster_.error();
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return RunSync(io_, std::move(a));
  }
  EtcdCluster cluster_;
  asio::io_context io_;
};

TEST_F(EtcdTls, WorksWithTheRightCaAndIsRefusedWithAnother) {
  auto good = EtcdClient::Create(io_.get_executor(), cluster_.Client());
  ASSERT_TRUE(good.ok()) << good.status().message();
  ASSERT_EQ(cluster_.Endpoint(0).substr(0, 8), "https://");
  auto w = Run((*good)->Txn({}, {Put("/tls", "ok")}));
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto r = Run((*good)->Get("/tls"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "ok");

  const TlsFiles other = cluster_.MakeOtherCa();
  ASSERT_FALSE(other.ca_file.empty()) << cluster_.error();
  // The server's certificate is not signed by the CA we trust.
  ClientOptions o = cluster_.Client(1000ms);
  o.tls = other;
  auto wrong_ca = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(wrong_ca.ok());
  auto refused = Run((*wrong_ca)->Get("/tls"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Errc::kAuthFailed) << refused.status().message();
  // We trust the server, but our certificate is signed by a CA etcd does not trust.
  o.tls = TlsFiles{cluster_.ClientTls().ca_file, other.cert_file, other.key_file};
  auto wrong_cert = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(wrong_cert.ok());
  auto refused2 = Run((*wrong_cert)->Txn({}, {Put("/tls", "must not land")}));
  ASSERT_FALSE(refused2.ok());
  EXPECT_EQ(refused2.status().code(), Errc::kAuthFailed) << refused2.status().message();
  auto still = Run((*good)->Get("/tls"));
  ASSERT_TRUE(still.ok());
  ASSERT_EQ(still->kvs.size(), 1u);
  EXPECT_EQ(still->kvs[0].value, "ok");
}

TEST_F(EtcdTls, TheServerNameIsCheckedAgainstTheUrlHost) {
  // The server certificate names only IP 127.0.0.1. "localhost" reaches the
  // same member with the right CA, but fails the host check.
  ClientOptions o = cluster_.Client(1000ms);
  const std::string url = cluster_.Endpoint(0);
  o.endpoints = {"https://localhost:" + url.substr(url.rfind(':') + 1)};
  auto c = EtcdClient::Create(io_.get_executor(), o);
  ASSERT_TRUE(c.ok());
  auto r = Run((*c)->Get("/x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kAuthFailed) << r.status().message();
}

}  // namespace
}  // namespace dsb::etcd
