// /metrics of a real dsb-broker scraped over TCP and read with the strict
// exposition parser: the numbers agree with `dsbctl status --json` taken
// around the scrape (held, capacity, limit, waiting, quarantined per target);
// a crashed client's slots count in dsb_slots_reclaimed_total; an operator's
// set-limit in dsb_limit_changes_total{source="operator"}; two brokers of a
// cluster show their lease metrics and the coordinator its ledger and limit
// changes; slots kept past a lapsed lease's drain time H are counted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dsb/client.h"
#include "tests/http/exposition_parser.h"
#include "tests/http/raw_http.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/ports.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace {

namespace json = boost::json;
using dsb::Client;
using dsb::ClientOptions;
using dsb::Permit;
using dsb::testing::BodyOf;
using dsb::testing::BrokerProcess;
using dsb::testing::Exposition;
using dsb::testing::HttpGet;
using dsb::testing::PortReservation;
using dsb::testing::ScratchDir;
using dsb::testing::StatusOf;
using dsb::testing::UniqueName;
using namespace std::chrono_literals;

// `dsbctl --socket S status --json`: the JSON object it prints (empty if none).
json::object DsbctlStatus(const std::filesystem::path& socket) {
  const auto o = dsb::testing::RunProgram(
      {dsb::testing::BinPath("dsbctl"), "--socket", socket.string(), "status", "--json"}, 30s);
  EXPECT_EQ(o.exit_code, 0) << o.output;
  std::istringstream in(o.output);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("{")) continue;
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    if (!ec && v.is_object()) return v.as_object();
  }
  ADD_FAILURE() << "no JSON in: " << o.output;
  return {};
}

// The scrape, parsed; fails the test if it is not 200 or not strict 0.0.4.
Exposition Scrape(std::uint16_t port) {
  const std::string r = HttpGet(port, "/metrics");
  EXPECT_EQ(StatusOf(r), 200) << r;
  Exposition e(BodyOf(r));
  EXPECT_TRUE(e.ok()) << e.error() << "\n" << BodyOf(r);
  return e;
}

double Num(const json::object& o, const char* key) {
  return o.contains(key) && o.at(key).is_number() ? o.at(key).to_number<double>() : -1;
}

const json::object* TargetOf(const json::object& status, const std::string& name) {
  if (!status.contains("targets")) return nullptr;
  for (const auto& t : status.at("targets").as_array()) {
    if (t.as_object().at("name").as_string() == name) return &t.as_object();
  }
  return nullptr;
}

class MetricsScrapeTest : public ::testing::Test {
 protected:
  void Start(std::vector<dsb::testing::BrokerTarget> targets) {
    ASSERT_TRUE(dir_.ok());
    ASSERT_TRUE(port_.ok()) << port_.error();
    broker_ = std::make_unique<BrokerProcess>(dir_.path(), UniqueName("met"), std::move(targets),
                                              "metrics = \"" + port_.address() + "\"");
    ASSERT_TRUE(broker_->Start()) << broker_->log();
    port_.Release();
    ASSERT_TRUE(broker_->WaitForLog("metrics on http://")) << broker_->log();
  }
  void TearDown() override {
    clients_.clear();
    if (broker_) {
      broker_->Stop();
      broker_->RemoveSegments();
    }
  }
  std::unique_ptr<Client> Connect(const std::string& target) {
    ClientOptions o;
    o.socket_path = broker_->socket().string();
    o.target = target;
    o.connect_timeout = 10s;
    std::error_code ec;
    std::string msg;
    auto c = Client::Connect(o, ec, &msg);
    EXPECT_TRUE(c) << ec.message() << ": " << msg;
    return c;
  }
  // The gauges of every target agree with the status: taken before and after
  // the scrape, with the same values both times (nothing moved in between).
  void ExpectScrapeMatchesStatus() {
    bool matched = false;
    std::string last;
    // Bounded: a status that moves between the two reads is retried.
    for (int attempt = 0; attempt < 10 && !matched; ++attempt) {
      const json::object before = DsbctlStatus(broker_->socket());
      const Exposition e = Scrape(port_.port());
      const json::object after = DsbctlStatus(broker_->socket());
      matched = true;
      for (const auto& tv : before.at("targets").as_array()) {
        const json::object& t = tv.as_object();
        const std::string name(t.at("name").as_string());
        const json::object* t2 = TargetOf(after, name);
        ASSERT_NE(t2, nullptr);
        const std::map<std::string, std::string> labels{{"target", name}};
        const std::pair<const char*, const char*> pairs[] = {
            {"dsb_slots_held", "held"},
            {"dsb_slots_capacity", "capacity"},
            {"dsb_limit", "limit"},
            {"dsb_waiting_threads", "waiting"},
            {"dsb_slots_quarantined", "quarantined"},
            {"dsb_slots_reclaimed_total", "slots_reclaimed"},
            {"dsb_refusals_reported_total", "session_limit_reports"}};
        for (const auto& [metric, key] : pairs) {
          if (Num(t, key) != Num(*t2, key)) {
            matched = false;  // moved meanwhile: try again
            continue;
          }
          const std::optional<double> v = e.Value(metric, labels);
          if (!v || *v != Num(t, key)) {
            matched = false;
            last = std::string(metric) + "{target=" + name + "} = " +
                   (v ? std::to_string(*v) : "absent") + ", status " + key + " = " +
                   std::to_string(Num(t, key));
          }
        }
      }
    }
    EXPECT_TRUE(matched) << last;
  }

  ScratchDir dir_{"dsb-metrics"};
  PortReservation port_;
  std::unique_ptr<BrokerProcess> broker_;
  std::vector<std::unique_ptr<Client>> clients_;
};

TEST_F(MetricsScrapeTest, GaugesAgreeWithDsbctlStatusWhileClientsHoldAndWait) {
  Start({{"exch01", 6, 0, "60s"}, {"pg01", 3, 0, "0s"}});
  // exch01: two clients (2 system slots) and 3 action slots held.
  clients_.push_back(Connect("exch01"));
  clients_.push_back(Connect("exch01"));
  ASSERT_TRUE(clients_[0] && clients_[1]);
  std::vector<Permit> permits;
  std::error_code ec;
  for (std::size_t i = 0; i < 3; ++i) {
    permits.push_back(clients_[i % 2]->Acquire(10s, ec));
    ASSERT_TRUE(permits.back()) << ec.message();
  }
  // pg01: full (1 system + 2 actions), and one thread waiting.
  clients_.push_back(Connect("pg01"));
  ASSERT_TRUE(clients_[2]);
  for (int i = 0; i < 2; ++i) {
    permits.push_back(clients_[2]->Acquire(10s, ec));
    ASSERT_TRUE(permits.back()) << ec.message();
  }
  Client* pg = clients_[2].get();
  std::thread waiter([pg] {
    std::error_code e;
    Permit p = pg->Acquire(60s, e);  // gets a slot once the test releases one
  });
  ASSERT_TRUE(dsb::testing::WaitUntil(
      [&] {
        const json::object status = DsbctlStatus(broker_->socket());
        const json::object* t = TargetOf(status, "pg01");
        return t != nullptr && Num(*t, "waiting") == 1;
      },
      20s));
  ExpectScrapeMatchesStatus();
  const Exposition e = Scrape(port_.port());
  EXPECT_EQ(e.Value("dsb_slots_held", {{"target", "exch01"}}), 5.0);
  EXPECT_EQ(e.Value("dsb_waiting_threads", {{"target", "pg01"}}), 1.0);
  EXPECT_EQ(e.Value("dsb_limit", {{"target", "pg01"}}), 3.0);
  ASSERT_NE(e.Find("dsb_build_info"), nullptr);
  EXPECT_EQ(e.Find("dsb_build_info")->samples.size(), 1u);
  for (const char* p : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                        "process_open_fds", "process_max_fds", "process_start_time_seconds"}) {
    EXPECT_TRUE(e.Value(p).has_value()) << p;
  }
  permits.pop_back();  // the waiter takes it
  waiter.join();
}

TEST_F(MetricsScrapeTest, ACrashedClientsSlotsCountAsReclaimedAndQuarantined) {
  Start({{"exch01", 8, 0, "60s"}});
  const Exposition before = Scrape(port_.port());
  EXPECT_EQ(before.Value("dsb_slots_reclaimed_total", {{"target", "exch01"}}), 0.0);
  const pid_t child = ::fork();
  if (child == 0) {
    auto c = Connect("exch01");
    if (!c) _exit(3);
    std::error_code e;
    std::vector<Permit> held;
    for (int i = 0; i < 3; ++i) {
      held.push_back(c->Acquire(10s, e));
      if (!held.back()) _exit(4);
    }
    ::kill(::getpid(), SIGKILL);  // dies holding 3 action slots and its system slot
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child could not hold its slots: " << status;
  ASSERT_TRUE(dsb::testing::WaitUntil(
      [&] {
        const auto v = Scrape(port_.port()).Value("dsb_slots_reclaimed_total",
                                                  {{"target", "exch01"}});
        return v && *v >= 3;
      },
      20s));
  const Exposition after = Scrape(port_.port());
  EXPECT_EQ(after.Value("dsb_slots_held", {{"target", "exch01"}}), 0.0);
  EXPECT_GE(*after.Value("dsb_slots_quarantined", {{"target", "exch01"}}), 3.0);
  ExpectScrapeMatchesStatus();
}

TEST_F(MetricsScrapeTest, AnOperatorsSetLimitCountsAsAnOperatorChange) {
  Start({{"exch01", 10, 0, "0s"}});
  const std::map<std::string, std::string> op{{"target", "exch01"}, {"source", "operator"}};
  Exposition e = Scrape(port_.port());
  EXPECT_EQ(e.Value("dsb_limit_changes_total", op), 0.0);
  const auto o = dsb::testing::RunProgram({dsb::testing::BinPath("dsbctl"), "--socket",
                                           broker_->socket().string(), "set-limit", "exch01",
                                           "7"},
                                          30s);
  ASSERT_EQ(o.exit_code, 0) << o.output;
  e = Scrape(port_.port());
  EXPECT_EQ(e.Value("dsb_limit_changes_total", op), 1.0);
  EXPECT_EQ(e.Value("dsb_limit_changes_total", {{"target", "exch01"}, {"source", "discovered"}}),
            0.0);
  EXPECT_EQ(e.Value("dsb_limit", {{"target", "exch01"}}), 7.0);
  EXPECT_EQ(e.Value("dsb_slots_capacity", {{"target", "exch01"}}), 7.0);
  ExpectScrapeMatchesStatus();
}

// Two brokers of one cluster (ws1 the coordinator), limit 12 on exch01,
// each serving metrics on a port of its own.
class MetricsScrapeCluster : public ::testing::Test {
 protected:
  void StartTwo(const std::string& stem) {
    ASSERT_TRUE(dir_.ok());
    spec_.brokers = 2;
    spec_.stem = UniqueName(stem);
    spec_.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 12\n";
    files_ = dsb::testing::WriteTestCluster(dir_.path(), spec_);
    metrics_.resize(2);
    for (std::size_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(metrics_[i].ok());
      std::ofstream(files_.configs[i], std::ios::app)
          << "metrics = \"" << metrics_[i].address() << "\"\n";
      brokers_.push_back(std::make_unique<BrokerProcess>(
          files_.configs[i], files_.sockets[i],
          std::vector<std::string>{files_.Segment(spec_, i, "exch01")}));
      ASSERT_TRUE(brokers_[i]->Start()) << brokers_[i]->log();
      metrics_[i].Release();
    }
  }

  ScratchDir dir_{"dsb-metrics"};
  dsb::testing::TestClusterSpec spec_;
  dsb::testing::TestClusterFiles files_;
  std::vector<PortReservation> metrics_;
  std::vector<std::unique_ptr<BrokerProcess>> brokers_;
};

TEST_F(MetricsScrapeCluster, TwoBrokersShowTheirLeasesAndTheCoordinatorItsLedger) {
  ASSERT_NO_FATAL_FAILURE(StartTwo("mc"));
  const dsb::testing::TestClusterFiles& files = files_;
  std::vector<PortReservation>& metrics = metrics_;
  std::vector<std::unique_ptr<BrokerProcess>>& brokers = brokers_;
  // Both have applied a grant once the coordinator left its learning period.
  ASSERT_TRUE(dsb::testing::WaitUntil(
      [&] {
        for (std::size_t i = 0; i < 2; ++i) {
          const auto v = Scrape(metrics[i].port()).Value("dsb_lease_grants_total",
                                                         {{"target", "exch01"}});
          if (!v || *v < 1) return false;
        }
        return true;
      },
      60s));
  const Exposition ws1 = Scrape(metrics[0].port());
  const Exposition ws2 = Scrape(metrics[1].port());
  for (const Exposition* e : {&ws1, &ws2}) {
    for (const char* m : {"dsb_lease_slots", "dsb_lease_expiries_total",
                          "dsb_slots_held_past_drain_total", "dsb_slots_capacity", "dsb_limit"}) {
      EXPECT_TRUE(e->Value(m, {{"target", "exch01"}}).has_value()) << m;
    }
    EXPECT_EQ(e->Value("dsb_slots_held_past_drain_total", {{"target", "exch01"}}), 0.0);
  }
  EXPECT_EQ(ws1.Value("dsb_limit", {{"target", "exch01"}}), 12.0);
  // Only the coordinator (ws1) exports the ledger, one series per broker.
  EXPECT_EQ(ws2.Find("dsb_ledger_owed"), nullptr);
  ASSERT_NE(ws1.Find("dsb_ledger_owed"), nullptr);
  EXPECT_TRUE(ws1.Value("dsb_ledger_owed", {{"target", "exch01"}, {"broker", "ws1"}}));
  EXPECT_TRUE(ws1.Value("dsb_ledger_granted", {{"target", "exch01"}, {"broker", "ws2"}}));
  EXPECT_TRUE(ws1.Value("dsb_ledger_pool", {{"target", "exch01"}}));
  // The coordinator's limit keeper counts an operator's set-limit, even one
  // asked at the other broker (forwarded); only the coordinator exports it.
  const std::map<std::string, std::string> op{{"target", "exch01"}, {"source", "operator"}};
  EXPECT_EQ(ws1.Value("dsb_limit_changes_total", op), 0.0);
  EXPECT_FALSE(ws2.Value("dsb_limit_changes_total", op).has_value());
  const auto o = dsb::testing::RunProgram({dsb::testing::BinPath("dsbctl"), "--socket",
                                           files.sockets[1].string(), "set-limit", "exch01",
                                           "9"},
                                          30s);
  ASSERT_EQ(o.exit_code, 0) << o.output;
  const Exposition after = Scrape(metrics[0].port());
  EXPECT_EQ(after.Value("dsb_limit_changes_total", op), 1.0);
  EXPECT_EQ(after.Value("dsb_limit_changes_total", {{"target", "exch01"}, {"source", "discovered"}}),
            0.0);
  EXPECT_FALSE(Scrape(metrics[1].port()).Value("dsb_limit_changes_total", op).has_value());
  // A broker stopped: the other's lease metrics are still served.
  brokers[1]->Stop();
  EXPECT_EQ(StatusOf(HttpGet(metrics[0].port(), "/metrics")), 200);
  for (auto& b : brokers) {
    b->Stop();
    b->RemoveSegments();
  }
}

// DESIGN "H is real time": a lease that ran out while a client keeps its
// slots past the drain time H counts those slots in
// dsb_slots_held_past_drain_total. ws2's client holds 3 action slots under
// its lease; the coordinator (ws1) is killed, so ws2 cannot renew: its lease
// lapses after D (1 s) and the check H (1 s) later finds the 3 still held
// above the floor (0).
TEST_F(MetricsScrapeCluster, SlotsHeldPastTheDrainTimeAfterALapseAreCounted) {
  ASSERT_NO_FATAL_FAILURE(StartTwo("mh"));
  const dsb::testing::TestClusterFiles& files = files_;
  std::vector<PortReservation>& metrics = metrics_;
  std::vector<std::unique_ptr<BrokerProcess>>& brokers = brokers_;
  const std::map<std::string, std::string> target{{"target", "exch01"}};
  ASSERT_TRUE(dsb::testing::WaitUntil(
      [&] {
        const auto v = Scrape(metrics[1].port()).Value("dsb_lease_grants_total", target);
        return v && *v >= 1;
      },
      60s));
  ClientOptions o;
  o.socket_path = files.sockets[1].string();
  o.target = "exch01";
  o.connect_timeout = 10s;
  std::error_code ec;
  std::string msg;
  std::unique_ptr<Client> client = Client::Connect(o, ec, &msg);
  ASSERT_TRUE(client) << ec.message() << ": " << msg;
  std::vector<Permit> permits;
  for (int i = 0; i < 3; ++i) {
    permits.push_back(client->Acquire(20s, ec));
    ASSERT_TRUE(permits.back()) << ec.message();
  }
  EXPECT_EQ(Scrape(metrics[1].port()).Value("dsb_slots_held_past_drain_total", target), 0.0);
  brokers[0]->Stop(SIGKILL);
  // D + H = 2 s after the last renew; the bound is for a loaded machine.
  ASSERT_TRUE(dsb::testing::WaitUntil(
      [&] {
        const auto v = Scrape(metrics[1].port()).Value("dsb_slots_held_past_drain_total", target);
        return v && *v >= 1;
      },
      60s))
      << brokers[1]->log();
  const Exposition e = Scrape(metrics[1].port());
  EXPECT_EQ(e.Value("dsb_slots_held_past_drain_total", target), 3.0);
  EXPECT_GE(e.Value("dsb_lease_expiries_total", target).value_or(0), 1.0);
  EXPECT_EQ(e.Value("dsb_lease_slots", target), 0.0);
  EXPECT_TRUE(brokers[1]->WaitForLog("3 slot(s) above the floor (0) still held"))
      << brokers[1]->log();
  permits.clear();
  client.reset();
  for (auto& b : brokers) {
    b->Stop();
    b->RemoveSegments();
  }
}

}  // namespace
