// The server's real limit, found three ways against real processes (issue 7,
// items 2-4): by feedback (refusal reports from dsb-load), by query (a
// target's limit_command) and by probe (dsbctl probe), plus the operator's
// set-limit; one broker and three brokers in cluster mode. dsb-simserver is
// the judge: its own refused and peak counters, never dsb's.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <map>
#include <random>
#include <sstream>

#include "dsb/client.h"
#include "tests/support/broker_admin.h"
#include "tests/support/test_cluster.h"
#include "tests/support/broker_process.h"
#include "tests/support/dsbctl_run.h"
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

constexpr int kConfigured = 20;  // the limit the config file claims
constexpr int kCap = 12;         // the server's real cap for the account
// Hard bound on the server's refusals until convergence. Rule F2 takes at most
// 2 x (configured - cap) refusals as evidence (the issue's target, printed by every run and
// measured in quiet runs: docs/notes.md). On top come attempts admitted before a lowering and
// refused after it: at most one per action thread per lowering step, and how many of those
// happen depends on scheduling alone (a loaded machine: 40 seen in a fresh-clone run beside
// three other builds, against 6-16 quiet). So the bound that holds on any machine counts them;
// without discovery the limit never reaches the cap and the wait before it fails.
constexpr int kThreads = 3 * 8;  // 3 dsb-load instances x 8 action threads in these tests
double RefusalBound(double limit_changes) {
  return 2.0 * (kConfigured - kCap) + kThreads * std::max(limit_changes, 1.0);
}
constexpr const char* kUser = "svc";

std::int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::string StrOf(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The status line of target `name` at a broker (empty if unreachable).
json::object TargetStatus(const std::filesystem::path& socket, const std::string& name = "exch01") {
  json::object r = testing::AskBroker(socket, local_protocol::Op::kStatus);
  const json::value* ts = r.if_contains("targets");
  if (ts == nullptr || !ts->is_array()) return {};
  for (const json::value& t : ts->as_array()) {
    if (t.is_object() && StrOf(t.as_object(), "name") == name) return t.as_object();
  }
  return {};
}

bool HasLimit(const json::object& t, int limit, const std::string& source) {
  return Num(t, "limit") == limit && StrOf(t, "limit_source") == source;
}

// The lines of `log` that record a limit change ("limit 20 -> 15 (source ...").
std::string LimitChanges(const std::string& log) {
  std::istringstream in(log);
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.find(": limit ") != std::string::npos && line.find(" -> ") != std::string::npos) {
      out += "  " + line + "\n";
    }
  }
  return out;
}

// The first JSON object line of `text` (dsbctl --json may print more lines).
json::object FirstJson(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    if (!ec && v.is_object()) return v.as_object();
  }
  return {};
}

void ServerCall(const SimServerProcess& server, const std::string& line) {
  auto c = server.Connect();
  std::error_code ec;
  const std::string reply = c.Call(line, ec);
  EXPECT_FALSE(ec) << line << ": " << ec.message();
  EXPECT_EQ(reply.rfind("OK", 0), 0u) << line << " -> " << reply;
}

// dsb-load runs: started as a child, its JSON summary read at the end.
class Loads {
 public:
  explicit Loads(const ScratchDir& dir) : dir_(dir) {}

  ChildProcess* Start(const std::filesystem::path& socket, const std::string& server,
                      int instances, int threads, double seconds) {
    auto p = std::make_unique<ChildProcess>();
    const std::string out = dir_.File("load-" + std::to_string(runs_.size()));
    EXPECT_TRUE(p->Start({tools_test::BinPath("dsb-load"), "--socket", socket.string(),
                          "--target", "exch01", "--server", server, "--user", kUser,
                          "--instances", std::to_string(instances), "--threads",
                          std::to_string(threads), "--duration", std::to_string(seconds),
                          "--hold-ms-min", "5", "--hold-ms-max", "20", "--acquire-timeout-ms",
                          "300", "--report-refusals", "--seed", std::to_string(11 + runs_.size())},
                         out + ".json", out + ".log"));
    runs_.push_back({std::move(p), out});
    return runs_.back().process.get();
  }

  // Waits for every run still going; SIGTERM first if `stop`. Returns the
  // summaries (an empty object for a run whose output did not parse).
  std::vector<json::object> FinishAll(bool stop) {
    std::vector<json::object> out;
    for (Run& r : runs_) {
      if (r.done) continue;
      if (stop) r.process->Signal(SIGTERM);
      const auto status = r.process->Wait(60s);
      EXPECT_TRUE(status.has_value()) << "dsb-load did not finish";
      r.done = true;
      std::string text = tools_test::ReadFile(r.out + ".json");
      while (!text.empty() && text.back() == '\n') text.pop_back();
      const auto nl = text.rfind('\n');
      boost::system::error_code ec;
      json::value v = json::parse(nl == std::string::npos ? text : text.substr(nl + 1), ec);
      EXPECT_FALSE(ec) << "dsb-load output: " << text << tools_test::ReadFile(r.out + ".log");
      out.push_back(!ec && v.is_object() ? v.as_object() : json::object{});
    }
    return out;
  }

 private:
  struct Run {
    std::unique_ptr<ChildProcess> process;
    std::string out;
    bool done = false;
  };
  const ScratchDir& dir_;
  std::vector<Run> runs_;
};

// ---------------------------------------------------------------- one broker

class SingleBrokerDiscovery : public ::testing::Test {
 protected:
  // Writes the config (limit 20, no reserve, no quarantine, `extra` TOML
  // lines in the target) and starts the broker.
  void StartBroker(const std::string& extra = "") {
    const std::string prefix = "dsc" + std::to_string(::getpid()) + "n" + std::to_string(seq_++);
    socket_ = dir_.File(prefix + ".sock");
    const std::string config = dir_.File(prefix + ".toml");
    {
      std::ofstream f(config);
      f << "[broker]\nid = \"" << prefix << "\"\nsocket = \"" << socket_.string()
        << "\"\nshm_prefix = \"" << prefix << "\"\n\n[[targets]]\nname = \"exch01\"\nlimit = "
        << kConfigured << "\nreserve = 0\nquarantine = \"0s\"\n"
        << extra;
    }
    broker_ = std::make_unique<BrokerProcess>(config, socket_,
                                              std::vector<std::string>{"dsb-" + prefix + "-exch01"});
    ASSERT_TRUE(broker_->Start()) << broker_->log();
  }

  void StartServer(int cap) {
    server_ = std::make_unique<SimServerProcess>(
        dir_, std::vector<std::string>{"--limit", std::to_string(cap)});
    ASSERT_TRUE(server_->ok());
  }

  json::object Status() { return TargetStatus(socket_); }
  double ServerStat(const char* key) { return Num(server_->UserStats(kUser), key); }

  std::unique_ptr<Client> Connect() {
    ClientOptions o;
    o.socket_path = socket_.string();
    o.target = "exch01";
    o.connect_timeout = 5s;
    std::error_code ec;
    std::string msg;
    auto c = Client::Connect(o, ec, &msg);
    EXPECT_TRUE(c) << msg;
    return c;
  }

  // Writes `body` as the limit script, atomically (a poll never reads half a file).
  void WriteScript(const std::string& body) {
    const std::string tmp = script_ + ".tmp";
    std::ofstream(tmp) << body << "\n";
    std::filesystem::rename(tmp, script_);
  }

  ScratchDir dir_;
  std::filesystem::path socket_;
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<SimServerProcess> server_;
  std::string script_ = dir_.File("cap.sh");
  int seq_ = 0;
};

TEST_F(SingleBrokerDiscovery, ConfiguredLimitAboveTheCapConvergesToItAndRefusalsStop) {
  StartBroker();
  StartServer(kCap);
  ASSERT_TRUE(HasLimit(Status(), kConfigured, "config")) << json::serialize(Status());
  Loads loads(dir_);
  const auto start = Clock::now();
  loads.Start(socket_, server_->address(), 3, 8, 15);
  json::object t;
  double reports_at_one_above = -1;  // refusals reported when the limit first read kCap + 1
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = Status();
        if (reports_at_one_above < 0 && Num(t, "limit") == kCap + 1) {
          reports_at_one_above = Num(t, "refusals_reported");
        }
        return HasLimit(t, kCap, "discovered");
      },
      15s))
      << "limit never reached " << kCap << ": " << json::serialize(t) << "\n"
      << broker_->log();
  const std::int64_t took = MsSince(start);
  const double refused_at = ServerStat("refused");
  const std::vector<json::object> first = loads.FinishAll(/*stop=*/true);
  const double refused_total = ServerStat("refused");
  // Sessions the server had accepted that dsb asked back (ShouldYield) while
  // the limit came down.
  if (reports_at_one_above >= 0) {
    std::printf("refusals reported when the limit first read %d: %.0f\n", kCap + 1,
                reports_at_one_above);
  }
  std::printf("dsb-load during convergence: refusals %.0f, yields %.0f\n",
              first.empty() ? -1.0 : Num(first[0], "refusals"),
              first.empty() ? -1.0 : Num(first[0], "yields"));
  std::printf("one broker, limit %d, server cap %d, 3 x 8 threads: limit %d (discovered) after "
              "%lld ms from the load's start; server refusals %.0f by convergence, %.0f in all "
              "(bound %d); refusals reported to the broker %.0f; limit changes %.0f\n",
              kConfigured, kCap, kCap, static_cast<long long>(took), refused_at, refused_total,
              2 * (kConfigured - kCap), Num(t, "refusals_reported"), Num(t, "limit_changes"));
  std::printf("%s", LimitChanges(broker_->log()).c_str());
  EXPECT_GT(refused_at, 0) << "discovered without a refusal?";
  // The issue's target is 2 x (20 - 12) = 16 (6-16 in 12 quiet runs; docs/notes.md). Rule F2
  // bounds the refusals it takes as evidence by 16; an attempt admitted before a lowering and
  // refused after it comes on top, and how many depends on scheduling (a loaded CI machine),
  // so the hard bound is 3 x 8. Without discovery the count is in the hundreds.
  EXPECT_LE(refused_at, RefusalBound(Num(t, "limit_changes")));
  EXPECT_LE(refused_total, RefusalBound(Num(t, "limit_changes")));
  EXPECT_FALSE(StrOf(t, "limit_changed_at").empty());

  // After convergence: a fresh run is never refused and never exceeds the cap.
  ServerCall(*server_, "STATS RESET");
  loads.Start(socket_, server_->address(), 3, 8, 3);
  const std::vector<json::object> after = loads.FinishAll(/*stop=*/false);
  ASSERT_EQ(after.size(), 1u);
  const double peak = ServerStat("peak"), mean = ServerStat("mean");
  std::printf("after convergence, 3 s of 3 x 8 threads: actions %.0f, server refused %.0f, peak "
              "%.0f, mean %.2f of %d\n",
              Num(after[0], "actions"), ServerStat("refused"), peak, mean, kCap);
  EXPECT_GT(Num(after[0], "actions"), 100);
  EXPECT_EQ(ServerStat("refused"), 0);
  EXPECT_EQ(Num(after[0], "refusals"), 0);
  EXPECT_LE(peak, kCap);
  EXPECT_GT(peak, kCap - 3) << "the load did not fill the cap: this proves little";
  EXPECT_TRUE(HasLimit(Status(), kCap, "discovered")) << json::serialize(Status());
}

TEST_F(SingleBrokerDiscovery, AnIsolatedRefusalDoesNotLowerTheLimit) {
  StartBroker();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::vector<Permit> held;
  std::error_code ec;
  for (int i = 0; i < 9; ++i) {
    held.push_back(client->Acquire(2s, ec));
    ASSERT_FALSE(ec) << ec.message();
  }
  // Another tool briefly used the account: one refusal while dsb held 10
  // (system + 9 actions, the refused attempt's slot left out).
  ASSERT_FALSE(client->ReportSessionLimit(held.back(), "isolated"));
  json::object t;
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = Status();
        return Num(t, "refusals_reported") == 1;
      },
      5s))
      << json::serialize(t);
  EXPECT_TRUE(HasLimit(t, kConfigured, "config")) << json::serialize(t);
  EXPECT_EQ(Num(t, "limit_changes"), 0);
  // A refusal holds capacity at what was in use for a moment (no retry at
  // the same level); then the whole limit is usable again.
  EXPECT_TRUE(tools_test::WaitUntil([&] { return Num(t = Status(), "capacity") == kConfigured; },
                                    3s))
      << json::serialize(t);
  EXPECT_TRUE(HasLimit(t, kConfigured, "config")) << json::serialize(t);
  ASSERT_TRUE(broker_->WaitForLog("reports the server refused a session")) << broker_->log();
  EXPECT_EQ(broker_->log().find("limit 20 -> "), std::string::npos) << broker_->log();
}

TEST_F(SingleBrokerDiscovery, AServerCapLoweredBrieflyIsNotDiscoveredFromOneRefusal) {
  // The server's own cap lowered for a moment under a running load: one
  // refusal at most is what a short blip costs; the limit must stay.
  StartBroker();
  StartServer(kConfigured);
  auto client = Connect();
  ASSERT_TRUE(client);
  std::error_code ec;
  // This "DigiScope" holds 2 sessions on the server (system + one action).
  auto system_session = server_->Connect();
  auto action_session = server_->Connect();
  ASSERT_EQ(system_session.Call(std::string("OPEN ") + kUser, ec).rfind("OK", 0), 0u);
  Permit p = client->Acquire(2s, ec);
  ASSERT_FALSE(ec);
  ASSERT_EQ(action_session.Call(std::string("OPEN ") + kUser, ec).rfind("OK", 0), 0u);
  ServerCall(*server_, std::string("LIMIT ") + kUser + " 2");
  Permit q = client->Acquire(2s, ec);
  ASSERT_FALSE(ec);
  auto refused = server_->Connect();
  const std::string reply = refused.Call(std::string("OPEN ") + kUser, ec);
  ASSERT_EQ(reply.rfind("ERR MAPI_E_SESSION_LIMIT", 0), 0u) << reply;
  ASSERT_FALSE(client->ReportSessionLimit(q, reply));
  q.ReleaseConfirmed();
  ServerCall(*server_, std::string("LIMIT ") + kUser + " " + std::to_string(kConfigured));
  json::object t;
  ASSERT_TRUE(tools_test::WaitUntil([&] { return Num(t = Status(), "refusals_reported") == 1; }))
      << json::serialize(t);
  EXPECT_TRUE(HasLimit(t, kConfigured, "config")) << json::serialize(t);
  EXPECT_EQ(ServerStat("refused"), 1);
}

TEST_F(SingleBrokerDiscovery, LimitCommandSetsTheLimitBeforeAnyClientIsServedAndKeepsTheLastGood) {
  WriteScript("echo 12");
  StartBroker("limit_command = \"/bin/sh " + script_ + "\"\nlimit_poll = \"1s\"\n" +
              "limit_command_timeout = \"300ms\"\n");
  // The first answer the broker gives already has the queried limit: it
  // accepts no connection before the command answered.
  json::object t = Status();
  EXPECT_TRUE(HasLimit(t, kCap, "query")) << json::serialize(t);
  EXPECT_EQ(Num(t, "capacity"), kCap);
  EXPECT_EQ(Num(t, "limit_ceiling"), kConfigured);

  // Garbage: the limit stays, and status says why.
  WriteScript("echo 'Maximum Allowed Sessions Per User: twelve'");
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = Status();
        const json::value* c = t.if_contains("limit_command");
        return c != nullptr && c->is_object() && c->as_object().at("last_error").is_string();
      },
      5s))
      << json::serialize(t);
  const json::object& cmd = t.at("limit_command").as_object();
  const std::string why(cmd.at("last_error").as_string());
  std::printf("garbage answer: last_error = %s\n", why.c_str());
  EXPECT_NE(why.find("twelve"), std::string::npos) << why;
  EXPECT_NE(why.find("between 1 and 65535"), std::string::npos) << why;
  EXPECT_TRUE(HasLimit(t, kCap, "query")) << json::serialize(t);
  EXPECT_EQ(Num(cmd, "last_value"), kCap);
  EXPECT_EQ(Num(cmd, "poll_ms"), 1000);

  // Above the configured limit: the configured limit is the ceiling.
  WriteScript("echo 30");
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = Status();
        const json::value* c = t.if_contains("limit_command");
        return c != nullptr && c->is_object() && Num(c->as_object(), "last_value") == 30 &&
               c->as_object().at("last_error").is_null();
      },
      5s))
      << json::serialize(t);
  EXPECT_TRUE(HasLimit(t, kConfigured, "query")) << json::serialize(t);
  EXPECT_EQ(Num(t, "capacity"), kConfigured);

  // A command that hangs is killed after limit_command_timeout; the broker
  // keeps serving meanwhile and afterwards.
  const std::string pid_file = dir_.File("hang.pid");
  WriteScript("echo $$ > " + pid_file + "; sleep 30");
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = Status();
        const json::value* c = t.if_contains("limit_command");
        return c != nullptr && c->is_object() && c->as_object().at("last_error").is_string() &&
               std::string(c->as_object().at("last_error").as_string()).find("timeout") !=
                   std::string::npos;
      },
      5s))
      << json::serialize(t);
  EXPECT_TRUE(HasLimit(t, kConfigured, "query")) << json::serialize(t);
  pid_t hung = 0;
  std::ifstream(pid_file) >> hung;
  ASSERT_GT(hung, 1);
  EXPECT_TRUE(tools_test::WaitUntil([&] { return ::kill(hung, 0) != 0; }, 3s))
      << "the hung command (pid " << hung << ") was not killed";
  auto client = Connect();
  ASSERT_TRUE(client);
  std::error_code ec;
  Permit p = client->Acquire(1s, ec);
  EXPECT_FALSE(ec) << ec.message();
  // The refusal log says the command failed, once per distinct reason.
  EXPECT_NE(broker_->log().find("limit_command"), std::string::npos);
}

TEST_F(SingleBrokerDiscovery, LimitCommandThatHangsAtStartDelaysServiceOnlyUntilItsTimeout) {
  WriteScript("sleep 30");
  const auto start = Clock::now();
  StartBroker("limit_command = \"/bin/sh " + script_ + "\"\nlimit_poll = \"5s\"\n" +
              "limit_command_timeout = \"400ms\"\n");
  json::object t = Status();
  const std::int64_t took = MsSince(start);
  std::printf("broker with a hanging limit_command (timeout 400 ms) answered after %lld ms\n",
              static_cast<long long>(took));
  EXPECT_TRUE(HasLimit(t, kConfigured, "config")) << json::serialize(t);
  const json::value* c = t.if_contains("limit_command");
  ASSERT_TRUE(c != nullptr && c->is_object()) << json::serialize(t);
  EXPECT_TRUE(c->as_object().at("last_value").is_null());
  ASSERT_TRUE(c->as_object().at("last_error").is_string()) << json::serialize(t);
  EXPECT_NE(std::string(c->as_object().at("last_error").as_string()).find("killed"),
            std::string::npos);
  auto client = Connect();
  EXPECT_TRUE(client);
}

TEST_F(SingleBrokerDiscovery, SetLimitByTheOperatorWithinTheBounds) {
  StartBroker();
  CtlRun r = Dsbctl(dir_, socket_, {"set-limit", "exch01", "5"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("limit 5"), std::string::npos) << r.out;
  json::object t = Status();
  EXPECT_TRUE(HasLimit(t, 5, "operator")) << json::serialize(t);
  EXPECT_EQ(Num(t, "capacity"), 5);
  EXPECT_EQ(Num(t, "limit_changes"), 1);

  r = Dsbctl(dir_, socket_, {"set-limit", "exch01", "999"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  std::printf("set-limit 999: %s", r.err.c_str());
  EXPECT_NE(r.err.find("999"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("20"), std::string::npos) << "the ceiling is not named: " << r.err;
  EXPECT_NE(r.err.find("2"), std::string::npos) << "the minimum is not named: " << r.err;
  r = Dsbctl(dir_, socket_, {"set-limit", "exch01", "1"});
  EXPECT_EQ(r.code, 1) << "below the minimum (reserve + 2): " << r.out << r.err;
  std::printf("set-limit 1: %s", r.err.c_str());
  EXPECT_TRUE(HasLimit(Status(), 5, "operator"));

  r = Dsbctl(dir_, socket_, {"set-limit", "nosuch", "5"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  std::printf("set-limit nosuch: %s", r.err.c_str());
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  r = Dsbctl(dir_, socket_, {"set-limit", "exch01", "0"});
  EXPECT_NE(r.code, 0) << "0 accepted: " << r.out << r.err;
  r = Dsbctl(dir_, socket_, {"set-limit", "exch01", "abc"});
  EXPECT_NE(r.code, 0) << "abc accepted: " << r.out << r.err;

  t = Status();
  EXPECT_TRUE(HasLimit(t, 5, "operator")) << json::serialize(t);
  EXPECT_EQ(Num(t, "limit_changes"), 1);
}

TEST_F(SingleBrokerDiscovery, MalformedSetLimitRequestsChangeNothing) {
  StartBroker();
  const std::vector<std::string> bad = {
      R"({"op":"set_limit"})",
      R"({"op":"set_limit","target":"exch01"})",
      R"({"op":"set_limit","limit":7})",
      R"({"op":"set_limit","target":"exch01","limit":"7"})",
      R"({"op":"set_limit","target":"exch01","limit":7.5})",
      R"({"op":"set_limit","target":"exch01","limit":7.0})",
      R"({"op":"set_limit","target":"exch01","limit":true})",
      R"({"op":"set_limit","target":"exch01","limit":null})",
      R"({"op":"set_limit","target":"exch01","limit":[7]})",
      R"({"op":"set_limit","target":"exch01","limit":{"v":7}})",
      R"({"op":"set_limit","target":"exch01","limit":-7})",
      R"({"op":"set_limit","target":"exch01","limit":0})",
      R"({"op":"set_limit","target":"exch01","limit":65536})",
      R"({"op":"set_limit","target":"exch01","limit":4294967303})",
      R"({"op":"set_limit","target":"exch01","limit":18446744073709551615})",
      R"({"op":"set_limit","target":"exch01","limit":1e300})",
      R"({"op":"set_limit","target":7,"limit":7})",
      R"({"op":"set_limit","target":["exch01"],"limit":7})",
      R"({"op":"set_limit","target":"","limit":7})",
      R"({"op":"set_limit","target":"exch01\u0000","limit":7})",
      R"({"op":"set_limit","target":"exch01","limit":7,"who":42})",
      R"({"op":["set_limit"],"target":"exch01","limit":7})",
  };
  for (const std::string& text : bad) {
    SCOPED_TRACE(text);
    boost::system::error_code ec;
    const json::value v = json::parse(text, ec);
    ASSERT_FALSE(ec);
    const json::object reply = testing::AskBroker(socket_, v.as_object());
    ASSERT_FALSE(reply.empty()) << "no answer (broker down?)";
    const bool accepted = reply.contains("ok") && reply.at("ok") == json::value(true);
    // `who` of the wrong type is ignored, not an error: the limit is valid.
    if (text.find("\"who\":42") != std::string::npos) {
      EXPECT_TRUE(accepted) << json::serialize(reply);
      ASSERT_TRUE(HasLimit(Status(), 7, "operator"));
      continue;
    }
    EXPECT_FALSE(accepted) << json::serialize(reply);
    EXPECT_FALSE(StrOf(reply, "message").empty()) << json::serialize(reply);
  }
  // Nothing else changed anything; the broker still answers.
  const json::object t = Status();
  EXPECT_TRUE(HasLimit(t, 7, "operator")) << json::serialize(t);
  EXPECT_EQ(Num(t, "limit_changes"), 1);
  EXPECT_TRUE(broker_->running());
}

TEST_F(SingleBrokerDiscovery, ProbeFindsTheCapOnAQuietTargetAndApplies) {
  StartBroker();
  StartServer(kCap);
  CtlRun r = Dsbctl(dir_, socket_,
                    {"--json", "probe", "exch01", "--server", server_->address(), "--user", kUser});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  json::object j = FirstJson(r.out);
  std::printf("probe: %s", r.out.c_str());
  EXPECT_EQ(Num(j, "cap"), kCap) << r.out;
  EXPECT_EQ(j["refused"], json::value(true)) << r.out;
  EXPECT_TRUE(HasLimit(Status(), kConfigured, "config")) << "probe without --apply changed it";
  // The probe closed what it opened.
  EXPECT_TRUE(tools_test::WaitUntil([&] { return ServerStat("current") == 0; }, 3s));

  r = Dsbctl(dir_, socket_,
             {"probe", "exch01", "--server", server_->address(), "--user", kUser, "--apply"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  json::object t = Status();
  EXPECT_TRUE(HasLimit(t, kCap, "operator")) << json::serialize(t);

  // A DigiScope holding two sessions (system + action) through dsb: the
  // target is not quiet; --force adds what dsb holds.
  auto client = Connect();
  ASSERT_TRUE(client);
  std::error_code ec;
  auto system_session = server_->Connect();
  ASSERT_EQ(system_session.Call(std::string("OPEN ") + kUser, ec).rfind("OK", 0), 0u);
  Permit p = client->Acquire(2s, ec);
  ASSERT_FALSE(ec);
  auto action_session = server_->Connect();
  ASSERT_EQ(action_session.Call(std::string("OPEN ") + kUser, ec).rfind("OK", 0), 0u);
  const double opened_before = ServerStat("opened");
  r = Dsbctl(dir_, socket_,
             {"probe", "exch01", "--server", server_->address(), "--user", kUser});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("not quiet"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(ServerStat("opened"), opened_before) << "a refused probe opened sessions";
  r = Dsbctl(dir_, socket_, {"--json", "probe", "exch01", "--server", server_->address(),
                             "--user", kUser, "--force"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  j = FirstJson(r.out);
  std::printf("probe --force with 2 held: %s", r.out.c_str());
  EXPECT_EQ(Num(j, "cap"), kCap) << r.out;
  EXPECT_EQ(Num(j, "opened"), kCap - 2) << r.out;
  EXPECT_EQ(Num(j, "dsb_held"), 2) << r.out;
}

// ------------------------------------------------------------ three brokers


class ClusterDiscovery : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::TestClusterSpec spec;
    spec.stem = "dcl" + std::to_string(::getpid());
    spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = " + std::to_string(kConfigured) +
                        "\nquarantine = \"0s\"\n";
    spec.broker_extra = "adopt_grace = \"1s\"\n";
    const testing::TestClusterFiles files = testing::WriteTestCluster(dir_.File(""), spec);
    for (std::size_t i = 0; i < files.configs.size(); ++i) {
      brokers_.push_back(std::make_unique<BrokerProcess>(
          files.configs[i], files.sockets[i],
          std::vector<std::string>{files.Segment(spec, i, "exch01")}));
    }
    server_ = std::make_unique<SimServerProcess>(
        dir_, std::vector<std::string>{"--limit", std::to_string(kCap)});
    ASSERT_TRUE(server_->ok());
    for (auto& b : brokers_) ASSERT_TRUE(b->Start()) << b->log();
    ASSERT_TRUE(
        tools_test::WaitUntil([&] { return testing::LearningOver(brokers_[0]->socket()); }, 20s))
        << "coordinator never left learning mode";
  }

  std::filesystem::path Socket(int broker) { return brokers_[static_cast<std::size_t>(broker - 1)]->socket(); }
  double ServerStat(const char* key) { return Num(server_->UserStats(kUser), key); }

  ScratchDir dir_;
  std::vector<std::unique_ptr<BrokerProcess>> brokers_;
  std::unique_ptr<SimServerProcess> server_;
};

TEST_F(ClusterDiscovery, CoordinatorsLimitConvergesToTheCapAndEveryBrokerShowsIt) {
  const json::object before = TargetStatus(Socket(2));
  ASSERT_TRUE(HasLimit(before, kConfigured, "config")) << json::serialize(before);
  Loads loads(dir_);
  const auto start = Clock::now();
  for (int b = 1; b <= 3; ++b) loads.Start(Socket(b), server_->address(), 1, 8, 15);
  json::object t;
  // Asked at a broker that is not the coordinator: it asks the coordinator.
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] {
        t = TargetStatus(Socket(2));
        return HasLimit(t, kCap, "discovered");
      },
      15s))
      << json::serialize(t) << "\n"
      << brokers_[0]->log();
  const std::int64_t took = MsSince(start);
  const double refused_at = ServerStat("refused");
  loads.FinishAll(/*stop=*/true);
  const double refused_total = ServerStat("refused");
  std::printf("three brokers, limit %d, server cap %d, 3 x 8 threads: coordinator's limit %d "
              "(discovered) seen at ws2 after %lld ms from the load's start; server refusals "
              "%.0f by convergence, %.0f in all (bound %d); reports %.0f, limit changes %.0f\n",
              kConfigured, kCap, kCap, static_cast<long long>(took), refused_at, refused_total,
              2 * (kConfigured - kCap), Num(t, "refusals_reported"), Num(t, "limit_changes"));
  std::printf("%s", LimitChanges(brokers_[0]->log()).c_str());
  EXPECT_GT(refused_at, 0);
  EXPECT_LE(refused_total, RefusalBound(Num(t, "limit_changes")));  // see the single broker
  EXPECT_TRUE(HasLimit(TargetStatus(Socket(3)), kCap, "discovered"));
  EXPECT_TRUE(HasLimit(TargetStatus(Socket(1)), kCap, "discovered"));

  ServerCall(*server_, "STATS RESET");
  for (int b = 1; b <= 3; ++b) loads.Start(Socket(b), server_->address(), 1, 8, 3);
  double actions = 0;
  for (const json::object& s : loads.FinishAll(/*stop=*/false)) {
    actions += Num(s, "actions");
    EXPECT_EQ(Num(s, "refusals"), 0);
  }
  const double peak = ServerStat("peak"), mean = ServerStat("mean");
  std::printf("after convergence, 3 s of 3 x 8 threads on three brokers: actions %.0f, server "
              "refused %.0f, peak %.0f, mean %.2f of %d\n",
              actions, ServerStat("refused"), peak, mean, kCap);
  EXPECT_GT(actions, 100);
  EXPECT_EQ(ServerStat("refused"), 0);
  EXPECT_LE(peak, kCap);
  EXPECT_TRUE(HasLimit(TargetStatus(Socket(2)), kCap, "discovered"));
}

TEST_F(ClusterDiscovery, SetLimitAtAnyBrokerChangesTheCoordinatorsLimit) {
  CtlRun r = Dsbctl(dir_, Socket(3), {"set-limit", "exch01", "8"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  json::object t = TargetStatus(Socket(1));
  EXPECT_TRUE(HasLimit(t, 8, "operator")) << json::serialize(t);
  EXPECT_TRUE(HasLimit(TargetStatus(Socket(2)), 8, "operator"));
  ASSERT_TRUE(brokers_[0]->WaitForLog("limit 20 -> 8")) << brokers_[0]->log();
  // The ledger follows: the pool is the new limit less the system slots.
  // Out of bounds at a non-coordinator: refused with the coordinator's reason.
  r = Dsbctl(dir_, Socket(2), {"set-limit", "exch01", "21"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  std::printf("cluster set-limit 21 at ws2: %s", r.err.c_str());
  EXPECT_NE(r.err.find("20"), std::string::npos) << r.err;
  r = Dsbctl(dir_, Socket(2), {"set-limit", "exch01", "3"});
  EXPECT_EQ(r.code, 1) << "below sum(system_slots + floor) + 1 = 4: " << r.out << r.err;
  std::printf("cluster set-limit 3 at ws2: %s", r.err.c_str());
  EXPECT_TRUE(HasLimit(TargetStatus(Socket(1)), 8, "operator"));
  // Malformed, through the local socket of a non-coordinator.
  const json::object bad = testing::AskBroker(
      Socket(2), {{"op", "set_limit"}, {"target", "exch01"}, {"limit", "9"}});
  EXPECT_FALSE(bad.contains("ok") && bad.at("ok") == json::value(true)) << json::serialize(bad);
  EXPECT_TRUE(HasLimit(TargetStatus(Socket(1)), 8, "operator"));
}

}  // namespace
}  // namespace dsb
