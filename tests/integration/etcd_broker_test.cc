// Issue 13 (lane link): brokers whose ledger is etcd, end to end. Real etcd
// (one member, tests/support/etcd_cluster.h), two real dsb-broker processes
// whose cluster file says ledger = "etcd" (no coordinator broker at all),
// DigiScope-like dsb-load on each, and dsb-simserver as the judge (its cap is
// far above the account's limit, so its `peak` measures S at the server).
//
//  - both brokers share the pool: the server never sees more than the limit;
//  - capacity moves to the broker with demand when the other goes idle;
//  - `dsbctl leases` (the leases op) on either broker shows the same ledger;
//  - drain through one broker shrinks the other within one round trip (the
//    watch), before its next regular renew; undrain through the other.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/local_protocol.h"
#include "dsb/client.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/client_permits.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/test_cluster.h"
#include "tests/tools/process.h"
#include "tests/tools/sim_server_process.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;
using tools_test::ChildProcess;
using tools_test::ScratchDir;
using tools_test::SimServerProcess;
namespace json = boost::json;
namespace lp = local_protocol;

constexpr int kLimit = 12;  // two brokers with one system slot each: pool 10
constexpr int kPool = kLimit - 2;
constexpr const char* kUser = "svc-digiscope";

long long MsOf(std::chrono::steady_clock::duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

class EtcdBrokerTest : public ::testing::Test {
 protected:
  // Starts one etcd member, the judge and two brokers with term D.
  void StartAll(const std::string& term) {
    ASSERT_TRUE(etcd_.Start(1)) << etcd_.error();
    testing::TestClusterSpec spec;
    spec.brokers = 2;
    spec.stem = "eb" + std::to_string(::getpid());
    prefix_ = "/dsb/" + spec.stem + "/";
    spec.ledger_keys = testing::EtcdLedgerKeys(etcd_.Endpoints(), prefix_);
    spec.cluster_keys = "term = \"" + term + "\"\ndrain = \"1s\"\n";
    spec.broker_keys = "system_slots = 1\n";
    spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = " + std::to_string(kLimit) + "\n";
    files_ = testing::WriteTestCluster(dir_.File(""), spec);
    for (std::size_t i = 0; i < files_.configs.size(); ++i) {
      brokers_.push_back(std::make_unique<BrokerProcess>(
          files_.configs[i], files_.sockets[i],
          std::vector<std::string>{files_.Segment(spec, i, "exch01")}));
    }
    server_ = std::make_unique<SimServerProcess>(dir_, std::vector<std::string>{"--limit", "1000"});
    ASSERT_TRUE(server_->ok());
    for (auto& b : brokers_) ASSERT_TRUE(b->Start()) << b->log();
    // A ledger made in etcd learns for (D + H)(1 + eps) (C3), seen through either broker.
    ASSERT_TRUE(tools_test::WaitUntil(
        [&] {
          return testing::LearningOver(brokers_[0]->socket()) &&
                 testing::LearningOver(brokers_[1]->socket());
        },
        60s))
        << "the etcd ledger never left learning mode\n"
        << brokers_[0]->log() << "\n"
        << brokers_[1]->log();
  }

  void SetUp() override { DSB_SKIP_WITHOUT_ETCD(); }

  json::array LedgerBrokers(std::size_t via) {
    return testing::LedgerBrokers(brokers_[via]->socket());
  }
  std::int64_t Field(std::size_t via, const std::string& id, const char* key) {
    return testing::LedgerField(LedgerBrokers(via), id, key);
  }
  // The lease broker `i` applies (its own view), -1 if unknown.
  std::int64_t Lease(std::size_t i) {
    const json::object s = testing::AskBroker(brokers_[i]->socket(), lp::Op::kStatus);
    const json::value* lease = s.if_contains("lease");
    if (lease == nullptr || !lease->is_object()) return -1;
    return lease->at("targets").as_array()[0].at("lease").to_number<std::int64_t>();
  }
  std::int64_t LeaseLeftMs(std::size_t i) {
    const json::object s = testing::AskBroker(brokers_[i]->socket(), lp::Op::kStatus);
    const json::value* lease = s.if_contains("lease");
    if (lease == nullptr || !lease->is_object()) return -1;
    const json::value& v = lease->at("targets").as_array()[0].at("lease_left_ms");
    return v.is_null() ? -1 : v.to_number<std::int64_t>();
  }

  std::unique_ptr<ChildProcess> StartLoad(std::size_t broker, int threads, double seconds) {
    auto p = std::make_unique<ChildProcess>();
    const std::string out = dir_.File("load-ws" + std::to_string(broker + 1) + "-" +
                                      std::to_string(loads_++));
    EXPECT_TRUE(p->Start({tools_test::BinPath("dsb-load"), "--socket",
                          files_.sockets[broker].string(), "--target", "exch01", "--server",
                          server_->address(), "--user", kUser, "--instances", "1", "--threads",
                          std::to_string(threads), "--duration", std::to_string(seconds),
                          "--hold-ms-min", "10", "--hold-ms-max", "60", "--acquire-timeout-ms",
                          "300"},
                         out + ".json", out + ".log"));
    outputs_[p.get()] = out + ".json";
    return p;
  }
  json::object Finish(std::unique_ptr<ChildProcess>& p) {
    auto status = p->Wait(120s);
    EXPECT_TRUE(status.has_value());
    std::string text = tools_test::ReadFile(outputs_[p.get()]);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    const auto nl = text.rfind('\n');
    boost::system::error_code ec;
    json::value v = json::parse(text.substr(nl == std::string::npos ? 0 : nl + 1), ec);
    EXPECT_FALSE(ec) << "dsb-load output: " << text;
    return !ec && v.is_object() ? v.as_object() : json::object{};
  }
  // Ends a load started with a long duration once the test has seen what it
  // waited for (dsb-load ends its holds and writes its report on SIGTERM): a
  // load's length is then never a hidden deadline for a wait.
  json::object Stop(std::unique_ptr<ChildProcess>& p) {
    if (p->alive()) p->Signal(SIGTERM);
    return Finish(p);
  }
  double ServerStat(const char* key) { return tools_test::Num(server_->UserStats(kUser), key); }

  // Runs the real dsbctl with `args` against broker `i` (bounded); its stdout, "" on failure.
  std::string Dsbctl(std::size_t i, const std::vector<std::string>& args) {
    const std::string stem = dir_.File("dsbctl-" + std::to_string(ctl_runs_++));
    std::vector<std::string> argv = {tools_test::BinPath("dsbctl"), "--socket",
                                     files_.sockets[i].string()};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess p;
    EXPECT_TRUE(p.Start(argv, stem + ".out", stem + ".err"));
    const auto status = p.Wait(30s);
    EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << "dsbctl " << args.at(0) << " failed: " << tools_test::ReadFile(stem + ".err");
    return tools_test::ReadFile(stem + ".out");
  }

  std::unique_ptr<Client> Connect(std::size_t broker) {
    return testing::ConnectClient(files_.sockets[broker], "exch01", "etcd-broker-test");
  }
  static std::vector<Permit> Take(Client& c, std::size_t n, std::chrono::seconds within) {
    return testing::TakePermits(c, n, within);
  }

  // What both brokers must agree on: per broker its epoch, mode, verdict,
  // owed and newest grant (the rest is timing).
  std::string LedgerText(std::size_t via) {
    std::string out;
    for (const json::value& b : LedgerBrokers(via)) {
      const json::object& o = b.as_object();
      out += json::serialize(json::object{{"broker", o.at("broker")},
                                          {"epoch", o.at("epoch")},
                                          {"mode", o.at("mode")},
                                          {"verdict", o.at("verdict")},
                                          {"owed", o.at("owed")},
                                          {"granted", o.at("granted")}}) +
             "\n";
    }
    return out;
  }

  testing::EtcdCluster etcd_;
  ScratchDir dir_;
  testing::TestClusterFiles files_;
  std::vector<std::unique_ptr<BrokerProcess>> brokers_;
  std::unique_ptr<SimServerProcess> server_;
  std::map<ChildProcess*, std::string> outputs_;
  int loads_ = 0;
  int ctl_runs_ = 0;
  std::string prefix_;  // the deployment's etcd_prefix
};

// Review item 6: deleting a broker's live key while its etcd lease lives makes
// the others' renews forget what it is owed (a forced revoke): the broker
// drops its lease to its floor at once (B2 shrink: held slots asked back) and
// says so loudly, then goes on with its key put again.
TEST_F(EtcdBrokerTest, DeletedLiveKeyDropsTheLeaseAtOnce) {
  StartAll("6s");
  auto c2 = Connect(1);
  ASSERT_TRUE(c2);
  std::vector<Permit> held = Take(*c2, 6, 30s);
  ASSERT_EQ(held.size(), 6u) << "ws2's lease never grew to 6\n" << brokers_[1]->log();
  ASSERT_FALSE(held.back().ShouldYield());
  const std::size_t before = brokers_[1]->log().size();
  // The client sees a shrink that asks held slots back by the segment's
  // revocation generation, which only grows: a grant right after the drop
  // clears ShouldYield again within milliseconds (the CI run of 2026-12-06
  // missed such a window), the generation stays raised.
  const std::uint64_t gen0 = c2->Info().revocation_generation;

  ChildProcess del;
  const std::string stem = dir_.File("etcdctl-del");
  ASSERT_TRUE(del.Start({"/usr/bin/etcdctl", "--endpoints=" + etcd_.Endpoint(0), "del",
                         "--prefix", prefix_ + "live/ws2/"},
                        stem + ".out", stem + ".err"));
  const auto status = del.Wait(30s);
  ASSERT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << tools_test::ReadFile(stem + ".err");
  ASSERT_EQ(tools_test::ReadFile(stem + ".out"), "1\n");  // one live key deleted
  const auto deleted = std::chrono::steady_clock::now();

  // Noticed at ws2's next renew (D/3 = 2 s when nothing else happens).
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] { return c2->Info().revocation_generation > gen0; }, 10s))
      << "ws2's clients were never asked to yield\n" << brokers_[1]->log();
  std::printf("etcdctl del of ws2's live key -> held slots asked back after %lld ms\n",
              MsOf(std::chrono::steady_clock::now() - deleted));
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        return brokers_[1]->log().find("was deleted while its etcd lease", before) !=
               std::string::npos;
      },
      10s))
      << brokers_[1]->log();
  const std::string log = brokers_[1]->log();
  const std::size_t said = log.find("was deleted while its etcd lease", before);
  EXPECT_NE(log.find("treated as a forced revoke", said), std::string::npos) << log;
  // The capacity fell to the floor at once, before any new grant.
  const std::size_t fell = log.find("+ lease 0): shrink", said);
  EXPECT_NE(fell, std::string::npos) << log.substr(before);
  EXPECT_EQ(log.find("etcd ledger: this instance's etcd lease", before), std::string::npos)
      << "the lease itself must still live\n" << log.substr(before);
  // It goes on: the key is back and a later grant is applied.
  held.clear();
  std::vector<Permit> again = Take(*c2, 4, 30s);
  EXPECT_EQ(again.size(), 4u) << "ws2 got nothing after the forced revoke\n"
                              << brokers_[1]->log().substr(before);
  EXPECT_TRUE(tools_test::WaitUntil([&] { return Lease(1) > 0; }, 10s)) << "no later grant applied";

  // Review item 3: etcd ending the lease well before its TTL (here an
  // operator's revoke; etcd-io/etcd#15247 looks the same to the broker) is
  // caught on the broker's own clock: logged at error, lease dropped at once.
  const std::string get_stem = dir_.File("etcdctl-get");
  ChildProcess get;
  ASSERT_TRUE(get.Start({"/usr/bin/etcdctl", "--endpoints=" + etcd_.Endpoint(0), "get",
                         "--prefix", prefix_ + "live/ws2/", "-w", "json"},
                        get_stem + ".out", get_stem + ".err"));
  ASSERT_TRUE(get.Wait(30s).has_value());
  boost::system::error_code ec;
  const json::value got = json::parse(tools_test::ReadFile(get_stem + ".out"), ec);
  ASSERT_FALSE(ec) << tools_test::ReadFile(get_stem + ".out");
  const json::array& kvs = got.at("kvs").as_array();
  ASSERT_EQ(kvs.size(), 1u) << json::serialize(got);
  char lease_hex[32];
  std::snprintf(lease_hex, sizeof lease_hex, "%llx",
                static_cast<unsigned long long>(kvs[0].at("lease").to_number<std::int64_t>()));
  const std::size_t mark = brokers_[1]->log().size();
  const std::uint64_t gen1 = c2->Info().revocation_generation;
  const std::string rev_stem = dir_.File("etcdctl-revoke");
  ChildProcess revoke;
  ASSERT_TRUE(revoke.Start({"/usr/bin/etcdctl", "--endpoints=" + etcd_.Endpoint(0), "lease",
                            "revoke", lease_hex},
                           rev_stem + ".out", rev_stem + ".err"));
  const auto rs = revoke.Wait(30s);
  ASSERT_TRUE(rs.has_value() && WIFEXITED(*rs) && WEXITSTATUS(*rs) == 0)
      << tools_test::ReadFile(rev_stem + ".err");
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] { return c2->Info().revocation_generation > gen1; }, 10s))
      << "ws2's clients were never asked to yield after the revoke\n"
      << brokers_[1]->log().substr(mark);
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        return brokers_[1]->log().find("etcd ended this instance's lease", mark) !=
               std::string::npos;
      },
      10s))
      << brokers_[1]->log().substr(mark);
  const std::string log2 = brokers_[1]->log();
  const std::size_t ended = log2.find("etcd ended this instance's lease", mark);
  EXPECT_NE(log2.find("etcd-io/etcd#15247", ended), std::string::npos);
  EXPECT_NE(log2.find("+ lease 0): shrink", ended), std::string::npos) << log2.substr(mark);
  // (A renew whose keepalive passed just before the revoke reads the live key
  // gone and says "was deleted" first: either line is a forced drop, so the
  // test does not require one of them to be absent.)
}

TEST_F(EtcdBrokerTest, TwoBrokersShareThePoolAndNeverExceedTheLimit) {
  StartAll("1s");
  // Both loads run their whole 6 s (dsb-load counts them from its own start,
  // so a slow start shortens nothing), each through its own broker.
  auto a = StartLoad(0, 16, 6);
  auto b = StartLoad(1, 16, 6);
  json::object ra = Finish(a), rb = Finish(b);
  // The peak only rises: read after the loads, it is their busiest instant.
  EXPECT_GE(ServerStat("peak"), kLimit - 2) << "the load never filled the limit\n"
                                            << brokers_[0]->log();
  EXPECT_EQ(tools_test::Num(ra, "refusals"), 0);
  EXPECT_EQ(tools_test::Num(rb, "refusals"), 0);
  EXPECT_GT(tools_test::Num(ra, "actions"), 0);
  EXPECT_GT(tools_test::Num(rb, "actions"), 0);
  const double peak = ServerStat("peak"), mean = ServerStat("mean");
  std::printf("two brokers on an etcd ledger: server peak %.0f, mean %.2f of limit %d\n", peak,
              mean, kLimit);
  EXPECT_LE(peak, kLimit) << "S broken: the server saw more than the limit";
  EXPECT_GT(peak, kPool / 2) << "the brokers never used the pool";

  // Idle: both brokers read the same ledger from etcd.
  std::string via1, via2;
  EXPECT_TRUE(tools_test::WaitUntil(
      [&] {
        via1 = LedgerText(0);
        via2 = LedgerText(1);
        return !via1.empty() && via1 == via2;
      },
      10s))
      << "ws1 says\n" << via1 << "ws2 says\n" << via2;
  std::printf("the ledger as ws1 and ws2 read it:\n%s", via1.c_str());
  EXPECT_NE(via1.find("\"ws1\""), std::string::npos);
  EXPECT_NE(via1.find("\"ws2\""), std::string::npos);
  // The real dsbctl, through either broker: the same ledger, read from etcd.
  for (std::size_t i : {0u, 1u}) {
    const std::string out = Dsbctl(i, {"leases"});
    EXPECT_NE(out.find("coordinator etcd ledger"), std::string::npos) << out;
    EXPECT_NE(out.find("connected to the etcd ledger, accepted by the etcd ledger"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find("target exch01: limit 12, pool 10"), std::string::npos) << out;
    EXPECT_NE(out.find("ws1"), std::string::npos) << out;
    EXPECT_NE(out.find("ws2"), std::string::npos) << out;
    if (i == 0) std::printf("dsbctl leases through ws1:\n%s", out.c_str());
  }
  EXPECT_NE(brokers_[0]->log().find("cluster ledger in etcd"), std::string::npos);
  EXPECT_NE(brokers_[0]->log().find("etcd ledger: this broker"), std::string::npos)
      << brokers_[0]->log();
}

TEST_F(EtcdBrokerTest, CapacityMovesToTheBrokerWithDemand) {
  StartAll("1s");
  auto first = StartLoad(0, 16, 120);
  ASSERT_TRUE(tools_test::WaitUntil([&] { return Field(1, "ws1", "granted") >= kPool - 1; }, 60s))
      << "ws1 never got the pool\n" << brokers_[0]->log();
  Stop(first);
  const auto start = std::chrono::steady_clock::now();
  auto second = StartLoad(1, 16, 120);
  ASSERT_TRUE(tools_test::WaitUntil([&] { return Field(0, "ws2", "granted") >= kPool - 1; }, 60s))
      << "the pool never moved to ws2\n" << brokers_[1]->log();
  std::printf("pool moved from ws1 to ws2 through etcd in %lld ms (renew interval D/3 = 333 ms)\n",
              MsOf(std::chrono::steady_clock::now() - start));
  json::object r = Stop(second);
  EXPECT_EQ(tools_test::Num(r, "refusals"), 0);
  EXPECT_LE(ServerStat("peak"), kLimit) << "S broken: the server saw more than the limit";
}

TEST_F(EtcdBrokerTest, DrainThroughOneBrokerShrinksTheOtherBeforeItsNextRenew) {
  // D = 6 s: a broker renews every D/3 = 2 s when nothing changes, so a shrink
  // before ws2's next regular renew was due came from the watch.
  constexpr auto kTerm = 6s;
  StartAll("6s");
  auto c2 = Connect(1);
  ASSERT_TRUE(c2);
  std::vector<Permit> held = Take(*c2, 6, 30s);
  ASSERT_EQ(held.size(), 6u) << "ws2's lease never grew to 6\n" << brokers_[1]->log();
  ASSERT_TRUE(tools_test::WaitUntil([&] { return Field(0, "ws2", "owed") >= 6; }, 10s));
  // Just after a grant: ws2's next regular renew is at least ~1.5 s away (for
  // the printed figure only: a loaded machine may never show such a moment).
  auto renew_due = std::chrono::steady_clock::now();
  const bool after_grant = tools_test::WaitUntil(
      [&] {
        const auto before = std::chrono::steady_clock::now();
        const std::int64_t left = LeaseLeftMs(1);
        renew_due = before + std::chrono::milliseconds(left) - kTerm * 2 / 3;
        return left >= std::chrono::milliseconds(kTerm - 500ms).count();
      },
      10s);

  const auto asked = std::chrono::steady_clock::now();
  const std::size_t drain_mark = brokers_[1]->log().size();
  json::object r = testing::AskBroker(brokers_[0]->socket(), lp::DrainRequest(lp::Op::kDrain, "ws2"));
  ASSERT_TRUE(r.at("ok").as_bool()) << json::serialize(r);
  EXPECT_EQ(r.at("targets").as_array()[0].at("mode").as_string(), "drained") << json::serialize(r);
  // C2: owed does not fall at once.
  EXPECT_EQ(r.at("targets").as_array()[0].at("owed").as_int64(), 6) << json::serialize(r);
  ASSERT_TRUE(tools_test::WaitUntil([&] { return held.back().ShouldYield(); }, 10s))
      << "ws2's clients were never asked to yield\n" << brokers_[1]->log();
  const auto seen = std::chrono::steady_clock::now();
  if (after_grant) {
    std::printf("drain through ws1 -> ShouldYield on ws2's client after %lld ms (its regular "
                "renew was due %lld ms after the drain)\n",
                MsOf(seen - asked), MsOf(renew_due - asked));
  }
  // The watch brought it: ws2 renewed early on the change. No bound on the
  // time: on a loaded machine (CI, 2026-12-06) the early renew can land after
  // the planned one was due; what must hold is that the watch asked for it.
  // (The planned renew may bring the drain first on a loaded machine; the
  // watch's line then follows: waited for, not read once.)
  EXPECT_TRUE(tools_test::WaitUntil(
      [&] {
        return brokers_[1]->log().find("the watch saw a change for this broker", drain_mark) !=
               std::string::npos;
      },
      10s))
      << "ws2 never renewed early on the drain: the watch did not bring it\n"
      << brokers_[1]->log().substr(drain_mark);
  EXPECT_TRUE(tools_test::WaitUntil([&] { return Lease(1) == 0; }, 10s))
      << "ws2's lease never reached 0\n" << brokers_[1]->log();
  EXPECT_NE(brokers_[0]->log().find("drained"), std::string::npos) << brokers_[0]->log();

  // Both brokers see the mode; owed falls as ws2 reports less held.
  held.clear();
  EXPECT_TRUE(tools_test::WaitUntil([&] { return Field(1, "ws2", "owed") == 0; }, 20s));
  for (std::size_t via : {0u, 1u}) {
    for (const json::value& b : LedgerBrokers(via)) {
      if (b.as_object().at("broker").as_string() == "ws2") {
        EXPECT_EQ(b.as_object().at("mode").as_string(), "drained") << "via ws" << via + 1;
      }
    }
  }
  // Undrain through the drained broker itself.
  r = testing::AskBroker(brokers_[1]->socket(), lp::DrainRequest(lp::Op::kUndrain, "ws2"));
  ASSERT_TRUE(r.at("ok").as_bool()) << json::serialize(r);
  std::vector<Permit> again = Take(*c2, 4, 30s);
  EXPECT_EQ(again.size(), 4u) << "ws2 got nothing after the undrain\n" << brokers_[1]->log();

  // Refusals name what is wrong.
  r = testing::AskBroker(brokers_[1]->socket(), lp::DrainRequest(lp::Op::kDrain, "ws9"));
  EXPECT_FALSE(r.at("ok").as_bool()) << json::serialize(r);
  r = testing::AskBroker(brokers_[1]->socket(), lp::RevokeRequest("ws1", "", true, false));
  EXPECT_FALSE(r.at("ok").as_bool()) << json::serialize(r);
  EXPECT_NE(json::serialize(r).find("confirm-dead"), std::string::npos) << json::serialize(r);
}

}  // namespace
}  // namespace dsb
