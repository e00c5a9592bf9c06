// Issue 13 (lane limits): the discovered limit (DESIGN section 8) when the
// ledger is in etcd and there is no coordinator broker. Real etcd (one
// member), two real dsb-broker processes with ledger = "etcd", dsb-load with
// --report-refusals on each, and dsb-simserver with a cap below the
// configured limit as the judge (its own refused and peak counters).
//
//  - refusals lower the limit to the server's cap: one broker (the limit
//    keeper, elected through etcd) decides, and `dsbctl status` on every
//    broker shows the limit, its source and time from etcd;
//  - kill -9 of the keeper: the other broker becomes keeper and the limit
//    stays (a new keeper starts from what etcd holds, never from the
//    configured limit: S);
//  - set-limit through either broker is an operator's limit stored in etcd:
//    it survives a restart of every broker;
//  - the keeper compacts etcd's history every interval up to the revision it
//    read at the previous tick; brokers keep renewing (lane fix-limits);
//  - a keeper (or set-limit) of an older cluster file generation never
//    writes over the ledger of a newer one: it steps down, a broker of the
//    stored generation keeps the limits, the lowered limit stays (review
//    item 1, lane fix-limits).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fstream>

#include "broker/etcd/etcd_client.h"
#include "common/local_protocol.h"
#include "tests/etcd/run_sync.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/dsbctl_run.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/test_cluster.h"
#include "tests/tools/process.h"
#include "tests/tools/sim_server_process.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;
using testing::CtlRun;
using testing::Dsbctl;
using tools_test::ChildProcess;
using tools_test::Num;
using tools_test::ScratchDir;
using tools_test::SimServerProcess;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

constexpr int kConfigured = 14;  // the limit the cluster file claims
constexpr int kCap = 8;          // the server's real cap for the account
constexpr const char* kUser = "svc";

std::string StrOf(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

json::object TargetStatus(const std::filesystem::path& socket) {
  json::object r = testing::AskBroker(socket, local_protocol::Op::kStatus);
  const json::value* ts = r.if_contains("targets");
  if (ts == nullptr || !ts->is_array()) return {};
  for (const json::value& t : ts->as_array()) {
    if (t.is_object() && StrOf(t.as_object(), "name") == "exch01") return t.as_object();
  }
  return {};
}

bool HasLimit(const json::object& t, int limit, const std::string& source) {
  return Num(t, "limit") == limit && StrOf(t, "limit_source") == source;
}

void ServerCall(const SimServerProcess& server, const std::string& line) {
  auto c = server.Connect();
  std::error_code ec;
  const std::string reply = c.Call(line, ec);
  EXPECT_FALSE(ec) << line << ": " << ec.message();
  EXPECT_EQ(reply.rfind("OK", 0), 0u) << line << " -> " << reply;
}

// The lines of `log` that record a limit change or a keeper change.
std::string LimitLines(const std::string& log) {
  std::istringstream in(log);
  std::string line, out;
  while (std::getline(in, line)) {
    if ((line.find("limit ") != std::string::npos && line.find(" -> ") != std::string::npos) ||
        line.find("limit keeper") != std::string::npos) {
      out += "  " + line + "\n";
    }
  }
  return out;
}

class EtcdLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DSB_SKIP_WITHOUT_ETCD();
    ASSERT_TRUE(etcd_.Start(1)) << etcd_.error();
    testing::TestClusterSpec spec;
    spec.brokers = 2;
    spec.stem = "el" + std::to_string(::getpid());
    prefix_ = "/dsb/" + spec.stem + "/";
    spec.ledger_keys = testing::EtcdLedgerKeys(etcd_.Endpoints(), prefix_);
    spec.cluster_keys = "term = \"1s\"\ndrain = \"1s\"\n";
    spec.broker_keys = "system_slots = 1\n";
    spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = " + std::to_string(kConfigured) +
                        "\nquarantine = \"0s\"\n" + TargetExtra();
    spec.broker_extra = "adopt_grace = \"1s\"\n";
    files_ = testing::WriteTestCluster(dir_.File(""), spec);
    for (std::size_t i = 0; i < files_.configs.size(); ++i) {
      brokers_.push_back(std::make_unique<BrokerProcess>(
          files_.configs[i], files_.sockets[i],
          std::vector<std::string>{files_.Segment(spec, i, "exch01")}));
    }
    server_ = std::make_unique<SimServerProcess>(
        dir_, std::vector<std::string>{"--limit", std::to_string(kCap)});
    ASSERT_TRUE(server_->ok());
    for (auto& b : brokers_) ASSERT_TRUE(b->Start()) << b->log();
    WaitLearningOver();
  }

  // More keys of the target's table (a fixture for limit_command adds one).
  virtual std::string TargetExtra() const { return ""; }

  void WaitLearningOver() {
    ASSERT_TRUE(tools_test::WaitUntil(
        [&] {
          for (auto& b : brokers_) {
            if (b->running() && !testing::LearningOver(b->socket())) return false;
          }
          return true;
        },
        60s))
        << "the etcd ledger never left learning mode\n"
        << brokers_[0]->log() << "\n"
        << brokers_[1]->log();
  }

  // The broker index whose id the status names as limit keeper (-1: none).
  int Keeper(std::size_t via) {
    const std::string id = StrOf(TargetStatus(brokers_[via]->socket()), "limit_keeper");
    for (std::size_t i = 0; i < brokers_.size(); ++i) {
      if (id == "ws" + std::to_string(i + 1)) return static_cast<int>(i);
    }
    return -1;
  }

  ChildProcess* StartLoad(std::size_t broker, int threads, double seconds) {
    auto p = std::make_unique<ChildProcess>();
    const std::string out = dir_.File("load-" + std::to_string(loads_.size()));
    EXPECT_TRUE(p->Start({tools_test::BinPath("dsb-load"), "--socket",
                          files_.sockets[broker].string(), "--target", "exch01", "--server",
                          server_->address(), "--user", kUser, "--instances", "1", "--threads",
                          std::to_string(threads), "--duration", std::to_string(seconds),
                          "--hold-ms-min", "5", "--hold-ms-max", "20", "--acquire-timeout-ms",
                          "300", "--report-refusals", "--seed",
                          std::to_string(31 + loads_.size())},
                         out + ".json", out + ".log"));
    loads_.push_back({std::move(p), out});
    return loads_.back().first.get();
  }
  // Waits for every load (SIGTERM first if `stop`); their summaries.
  std::vector<json::object> FinishLoads(bool stop) {
    std::vector<json::object> out;
    for (auto& [p, stem] : loads_) {
      if (!p) continue;
      if (stop) p->Signal(SIGTERM);
      EXPECT_TRUE(p->Wait(60s).has_value()) << "dsb-load did not finish";
      p.reset();
      std::string text = tools_test::ReadFile(stem + ".json");
      while (!text.empty() && text.back() == '\n') text.pop_back();
      const auto nl = text.rfind('\n');
      boost::system::error_code ec;
      json::value v = json::parse(nl == std::string::npos ? text : text.substr(nl + 1), ec);
      out.push_back(!ec && v.is_object() ? v.as_object() : json::object{});
    }
    return out;
  }
  double ServerStat(const char* key) { return Num(server_->UserStats(kUser), key); }

  testing::EtcdCluster etcd_;
  std::string prefix_;  // the deployment's etcd prefix
  ScratchDir dir_;
  testing::TestClusterFiles files_;
  std::vector<std::unique_ptr<BrokerProcess>> brokers_;
  std::unique_ptr<SimServerProcess> server_;
  std::vector<std::pair<std::unique_ptr<ChildProcess>, std::string>> loads_;
};

TEST_F(EtcdLimitsTest, RefusalsLowerTheLimitToTheCapAndANewKeeperKeepsIt) {
  // One keeper, the same on both brokers; the configured limit at first.
  int keeper = -1;
  ASSERT_TRUE(tools_test::WaitUntil([&] { return (keeper = Keeper(0)) >= 0; }, 20s))
      << json::serialize(TargetStatus(brokers_[0]->socket())) << "\n"
      << brokers_[0]->log();
  EXPECT_EQ(Keeper(1), keeper);
  EXPECT_TRUE(HasLimit(TargetStatus(brokers_[1]->socket()), kConfigured, "config"))
      << json::serialize(TargetStatus(brokers_[1]->socket()));

  const auto start = Clock::now();
  for (std::size_t b = 0; b < 2; ++b) StartLoad(b, 8, 20);
  json::object t;
  // Both brokers show the discovered limit (read from etcd).
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = TargetStatus(brokers_[0]->socket());
        return HasLimit(t, kCap, "discovered") &&
               HasLimit(TargetStatus(brokers_[1]->socket()), kCap, "discovered");
      },
      20s))
      << json::serialize(t) << "\n"
      << LimitLines(brokers_[0]->log()) << LimitLines(brokers_[1]->log());
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  const double refused_at = ServerStat("refused");
  FinishLoads(/*stop=*/true);
  EXPECT_EQ(Num(t, "ledger_limit"), kCap) << json::serialize(t);  // the ledger's pool follows
  // F2 takes at most 2 x (configured - cap) refusals as evidence; on top come
  // attempts admitted before a lowering and refused after it, at most one per
  // action thread per lowering step (as discovery_test counts them).
  const json::object at_keeper = TargetStatus(brokers_[static_cast<std::size_t>(keeper)]->socket());
  const double changes = std::max(Num(at_keeper, "limit_changes"), 1.0);
  EXPECT_LE(refused_at, 2.0 * (kConfigured - kCap) + 16 * changes) << json::serialize(at_keeper);
  EXPECT_FALSE(StrOf(t, "limit_changed_at").empty()) << json::serialize(t);
  std::printf("etcd ledger, 2 brokers x 8 threads, limit %d, server cap %d: limit %d (discovered) "
              "on both brokers after %lld ms; server refusals %.0f by then; keeper ws%d\n%s",
              kConfigured, kCap, kCap, static_cast<long long>(took), refused_at, keeper + 1,
              LimitLines(brokers_[static_cast<std::size_t>(keeper)]->log()).c_str());

  // dsbctl status (text) on the broker that is not the keeper: limit, source, time, keeper.
  const std::size_t not_keeper = keeper == 0 ? 1 : 0;
  CtlRun st = Dsbctl(dir_, brokers_[not_keeper]->socket(), {"status"});
  EXPECT_EQ(st.code, 0) << st.out << st.err;
  EXPECT_NE(st.out.find("limit 8 (discovered) since 20"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("limit keeper ws" + std::to_string(keeper + 1)), std::string::npos)
      << st.out;
  std::printf("dsbctl status at ws%zu:\n%s", not_keeper + 1, st.out.c_str());

  // After convergence: the server's peak is the cap, nothing refused.
  ServerCall(*server_, "STATS RESET");
  // The loads run until the server has seen them near the cap (the peak only
  // rises), so their length is no hidden deadline on a slow machine.
  for (std::size_t b = 0; b < 2; ++b) StartLoad(b, 8, 120);
  EXPECT_TRUE(tools_test::WaitUntil([&] { return ServerStat("peak") >= kCap - 1; }, 60s))
      << "the loads never reached the cap after convergence";
  double actions = 0;
  for (const json::object& s : FinishLoads(/*stop=*/true)) actions += Num(s, "actions");
  const double peak = ServerStat("peak");
  std::printf("after convergence, 2 x 8 threads until the peak: actions %.0f, server refused "
              "%.0f, peak %.0f, mean %.2f of cap %d\n",
              actions, ServerStat("refused"), peak, ServerStat("mean"), kCap);
  EXPECT_GT(actions, 0);
  EXPECT_EQ(ServerStat("refused"), 0);
  EXPECT_LE(peak, kCap);
  EXPECT_GE(peak, kCap - 1);

  // kill -9 of the keeper: the other broker takes over from what etcd holds.
  const std::size_t other = keeper == 0 ? 1 : 0;
  brokers_[static_cast<std::size_t>(keeper)]->Stop(SIGKILL);
  const auto killed = Clock::now();
  ASSERT_TRUE(brokers_[other]->WaitForLog("is the limit keeper now", 30s))
      << brokers_[other]->log();
  const auto took_over =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] { return Keeper(other) == static_cast<int>(other); }, 10s))
      << json::serialize(TargetStatus(brokers_[other]->socket()));
  // The new keeper has read the store and written (or kept) its records: the
  // limit is still the cap, in etcd and in the ledger, over several of its
  // steps (100 ms each) -- not back to the configured one.
  for (int i = 0; i < 10; ++i) {
    t = TargetStatus(brokers_[other]->socket());
    ASSERT_TRUE(HasLimit(t, kCap, "discovered")) << "read " << i << ": " << json::serialize(t)
                                                 << "\n" << brokers_[other]->log();
    ASSERT_EQ(Num(t, "ledger_limit"), kCap) << json::serialize(t);
    // Paces the reads over about a second of the keeper's steps (not a wait
    // for an event: each read must already hold).
    std::this_thread::sleep_for(100ms);
  }
  std::printf("keeper ws%d killed (-9): ws%zu is keeper after %lld ms, limit stays %d "
              "(discovered)\n",
              keeper + 1, other + 1, static_cast<long long>(took_over), kCap);
  // And it serves within the cap.
  ServerCall(*server_, "STATS RESET");
  StartLoad(other, 8, 3);
  FinishLoads(/*stop=*/false);
  EXPECT_LE(ServerStat("peak"), kCap);
}

TEST_F(EtcdLimitsTest, SetLimitThroughEitherBrokerIsStoredInEtcdAndSurvivesARestartOfAll) {
  CtlRun r = Dsbctl(dir_, brokers_[1]->socket(), {"set-limit", "exch01", "10"});
  ASSERT_EQ(r.code, 0) << r.out << r.err << brokers_[1]->log();
  EXPECT_TRUE(HasLimit(TargetStatus(brokers_[0]->socket()), 10, "operator"))
      << json::serialize(TargetStatus(brokers_[0]->socket()));
  EXPECT_TRUE(HasLimit(TargetStatus(brokers_[1]->socket()), 10, "operator"));
  EXPECT_EQ(Num(TargetStatus(brokers_[0]->socket()), "ledger_limit"), 10);
  // Out of bounds, through the other broker: refused, naming the bounds.
  r = Dsbctl(dir_, brokers_[0]->socket(), {"set-limit", "exch01", "15"});
  EXPECT_NE(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("14"), std::string::npos) << r.err;
  r = Dsbctl(dir_, brokers_[0]->socket(), {"set-limit", "exch01", "2"});
  EXPECT_NE(r.code, 0) << "below sum(system_slots + floor) + 1 = 3: " << r.out << r.err;
  r = Dsbctl(dir_, brokers_[0]->socket(), {"set-limit", "exch01", "9"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  json::object t = TargetStatus(brokers_[1]->socket());
  EXPECT_TRUE(HasLimit(t, 9, "operator")) << json::serialize(t);

  // Every broker stops; etcd keeps the limit; they start again.
  for (auto& b : brokers_) b->Stop();
  for (auto& b : brokers_) ASSERT_TRUE(b->Start()) << b->log();
  WaitLearningOver();
  for (auto& b : brokers_) {
    t = TargetStatus(b->socket());
    EXPECT_TRUE(HasLimit(t, 9, "operator")) << json::serialize(t) << "\n" << b->log();
    EXPECT_EQ(Num(t, "ledger_limit"), 9) << json::serialize(t);
  }
  // The new keeper (whichever won) keeps it too.
  ASSERT_TRUE(tools_test::WaitUntil([&] { return Keeper(0) >= 0; }, 20s));
  ASSERT_TRUE(brokers_[static_cast<std::size_t>(Keeper(0))]->WaitForLog("is the limit keeper now"));
  t = TargetStatus(brokers_[0]->socket());
  EXPECT_TRUE(HasLimit(t, 9, "operator")) << json::serialize(t);
  std::printf("set-limit 10 through ws2, then 9 through ws1, all brokers restarted: status on "
              "both shows 9 (operator), the ledger's limit 9\n");
}

// A watch of the prefix from `revision`: Ok once an event arrives, kConflict
// "compacted" when etcd compacted past it (bounded: cancelled after 5 s).
Status WatchFrom(boost::asio::io_context& io, etcd::EtcdClient& client, const std::string& prefix,
                 std::int64_t revision) {
  boost::asio::steady_timer bound(io);
  bound.expires_after(5s);
  bound.async_wait([&client](boost::system::error_code ec) {
    if (!ec) client.Cancel();
  });
  Status s = etcd::RunSync(
      io, client.Watch(prefix, revision, [](const etcd::WatchEvent&) { return false; }));
  bound.cancel();
  return s;
}

// The first target's applied renew (request id) of the broker's lease agent.
std::string Applied(const std::filesystem::path& socket) {
  json::object r = testing::AskBroker(socket, local_protocol::Op::kStatus);
  const json::value* lease = r.if_contains("lease");
  if (lease == nullptr || !lease->is_object()) return {};
  const json::value* ts = lease->as_object().if_contains("targets");
  if (ts == nullptr || !ts->is_array() || ts->as_array().empty()) return {};
  return StrOf(ts->as_array()[0].as_object(), "applied");
}

TEST_F(EtcdLimitsTest, TheKeeperCompactsEtcdsHistoryAndBrokersKeepRenewing) {
  // D = 1 s: the keeper compacts every max(10 D, 10 s) = 10 s, up to the
  // revision it read one interval before.
  boost::asio::io_context io;
  auto created = etcd::EtcdClient::Create(io.get_executor(), etcd_.Client(2s));
  ASSERT_TRUE(created.ok()) << created.status().message();
  etcd::EtcdClient& client = **created;
  auto first = etcd::RunSync(io, client.RangePrefix(prefix_));
  ASSERT_TRUE(first.ok()) << first.status().message();
  const std::int64_t old = first->revision;
  ASSERT_TRUE(WatchFrom(io, client, prefix_, old).ok()) << "history at the start is there";
  const auto start = Clock::now();
  Status s;
  // The first tick may compact only up to a revision below `old` (the keeper
  // started before it); the next one passes it: at most 2 intervals + slack.
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        s = WatchFrom(io, client, prefix_, old);
        return s.code() == Errc::kConflict &&
               s.message().find("compacted") != std::string::npos;
      },
      35s))
      << "revision " << old << " was never compacted: " << s.message() << "\n"
      << brokers_[0]->log() << brokers_[1]->log();
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  // The history of the last interval stays: a watch from the current
  // revision still works.
  auto now = etcd::RunSync(io, client.RangePrefix(prefix_));
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(WatchFrom(io, client, prefix_, now->revision).ok());
  // Both brokers keep renewing (each applies two more renews) and a limit
  // set through one reaches the other's ledger limit.
  for (auto& b : brokers_) {
    const std::string a0 = Applied(b->socket());
    std::string a1;
    ASSERT_TRUE(tools_test::WaitUntil(
        [&] {
          const std::string a = Applied(b->socket());
          if (a != a0 && a1.empty()) a1 = a;
          return !a1.empty() && a != a1;
        },
        10s))
        << "no renew applied after the compaction: " << a0 << "\n" << b->log();
  }
  CtlRun r = Dsbctl(dir_, brokers_[1]->socket(), {"set-limit", "exch01", "12"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(Num(TargetStatus(brokers_[0]->socket()), "ledger_limit"), 12);
  std::printf("etcd revision %lld (at the test's start) refused as compacted after %lld ms; "
              "both brokers renewed after it; set-limit 12 through ws2 seen by ws1\n",
              static_cast<long long>(old), static_cast<long long>(took));
}

// Review item 1: generation 2 lowers the configured limit 14 -> 10 and ws of
// the non-keeper is restarted with it; the generation-1 keeper must not raise
// the limit back (nor may a set-limit through it).
TEST_F(EtcdLimitsTest, AnOlderGenerationsKeeperStepsDownAndCannotRaiseTheLimit) {
  int keeper = -1;
  ASSERT_TRUE(tools_test::WaitUntil([&] { return (keeper = Keeper(0)) >= 0; }, 20s));
  const std::size_t old_k = static_cast<std::size_t>(keeper);
  const std::size_t fresh = old_k == 0 ? 1 : 0;
  // The keeper's record (limit 14, config) is in etcd.
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        const json::object t = TargetStatus(brokers_[fresh]->socket());
        const json::value* p = t.if_contains("persisted");
        return HasLimit(t, kConfigured, "config") && p != nullptr && p->is_bool() && p->as_bool();
      },
      20s))
      << json::serialize(TargetStatus(brokers_[fresh]->socket()));

  // Generation 2: the same file, limit 10; only `fresh` runs it.
  constexpr int kLowered = 10;
  const std::filesystem::path dir = files_.configs[0].parent_path();
  std::string cluster = tools_test::ReadFile((dir / "cluster.toml").string());
  const std::string old_limit = "limit = " + std::to_string(kConfigured) + "\n";
  ASSERT_NE(cluster.find(old_limit), std::string::npos) << cluster;
  cluster.replace(cluster.find(old_limit), old_limit.size(),
                  "limit = " + std::to_string(kLowered) + "\n");
  ASSERT_EQ(cluster.rfind("[cluster]\n", 0), 0u) << cluster;
  cluster.insert(std::string("[cluster]\n").size(), "generation = 2\n");
  { std::ofstream(dir / "cluster2.toml") << cluster; }
  std::string ws = tools_test::ReadFile(files_.configs[fresh].string());
  const std::string ref = "cluster = \"cluster.toml\"";
  ASSERT_NE(ws.find(ref), std::string::npos) << ws;
  ws.replace(ws.find(ref), ref.size(), "cluster = \"cluster2.toml\"");
  brokers_[fresh]->Stop();
  { std::ofstream(files_.configs[fresh]) << ws; }
  ASSERT_TRUE(brokers_[fresh]->Start()) << brokers_[fresh]->log();
  const auto restarted = Clock::now();

  // The old keeper steps down (once, saying why); the generation-2 broker
  // becomes the keeper.
  ASSERT_TRUE(brokers_[old_k]->WaitForLog("runs cluster file generation 2", 20s))
      << brokers_[old_k]->log();
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] { return Keeper(fresh) == static_cast<int>(fresh); }, 20s))
      << json::serialize(TargetStatus(brokers_[fresh]->socket())) << "\n"
      << brokers_[old_k]->log() << "\n"
      << brokers_[fresh]->log();
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted).count();
  // The lowered limit holds in the ledger over many keeper steps of both.
  json::object t;
  for (int i = 0; i < 10; ++i) {
    t = TargetStatus(brokers_[fresh]->socket());
    ASSERT_EQ(Num(t, "ledger_limit"), kLowered) << "read " << i << ": " << json::serialize(t)
                                                << "\n" << brokers_[old_k]->log();
    std::this_thread::sleep_for(100ms);  // paces the reads (each must already hold)
  }
  EXPECT_LE(Num(t, "limit"), kLowered) << json::serialize(t);
  // An operator on the old file cannot raise it either (13 is within the old
  // file's [3, 14]).
  CtlRun r = Dsbctl(dir_, brokers_[old_k]->socket(), {"set-limit", "exch01", "13"});
  EXPECT_NE(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("generation"), std::string::npos) << r.err;
  EXPECT_EQ(Num(TargetStatus(brokers_[fresh]->socket()), "ledger_limit"), kLowered);
  // Stepped down once: the reason is logged once, not in a loop.
  const std::string log = brokers_[old_k]->log();
  std::size_t lines = 0;
  for (std::size_t at = log.find("runs cluster file generation 2"); at != std::string::npos;
       at = log.find("runs cluster file generation 2", at + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 3u) << log;
  std::printf("generation 2 (limit %d) on ws%zu: the generation-1 keeper ws%zu stepped down, ws%zu "
              "keeper %lld ms after its restart; ledger limit stays %d; set-limit 13 through ws%zu "
              "refused: %s",
              kLowered, fresh + 1, old_k + 1, fresh + 1, static_cast<long long>(took), kLowered,
              old_k + 1, r.err.c_str());
}

// limit_command with an etcd ledger: it runs on the limit keeper only, and its
// answer is every broker's limit (source query), stored in etcd.
class EtcdLimitCommandTest : public EtcdLimitsTest {
 protected:
  std::string TargetExtra() const override {
    return "limit_command = \"echo 11\"\nlimit_poll = \"1s\"\n";
  }
};

TEST_F(EtcdLimitCommandTest, TheKeepersLimitCommandSetsEveryBrokersLimit) {
  json::object t;
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = TargetStatus(brokers_[0]->socket());
        return HasLimit(t, 11, "query") &&
               HasLimit(TargetStatus(brokers_[1]->socket()), 11, "query");
      },
      20s))
      << json::serialize(t) << "\n"
      << brokers_[0]->log() << brokers_[1]->log();
  EXPECT_EQ(Num(t, "ledger_limit"), 11) << json::serialize(t);
  const int keeper = Keeper(0);
  ASSERT_GE(keeper, 0);
  // Only the keeper runs it (and says what it answered).
  const json::object at_keeper = TargetStatus(brokers_[static_cast<std::size_t>(keeper)]->socket());
  const json::value* command = at_keeper.if_contains("limit_command");
  ASSERT_TRUE(command != nullptr && command->is_object()) << json::serialize(at_keeper);
  EXPECT_EQ(Num(command->as_object(), "last_value"), 11) << json::serialize(at_keeper);
  std::printf("limit_command 'echo 11' on keeper ws%d: limit 11 (query) on both brokers\n",
              keeper + 1);
}

}  // namespace
}  // namespace dsb
