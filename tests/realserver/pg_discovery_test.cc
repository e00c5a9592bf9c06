// The server's real limit, found three ways against PostgreSQL (role `digiscope`, CONNECTION
// LIMIT 12): by feedback (a broker told `limit = 20` learns 12 from the refusals its clients
// report), by query (`limit_command` runs psql) and by probe (`dsbctl probe`). PostgreSQL's own
// log judges the refusals; dsb's status only says what dsb believes.
#include <cstdio>
#include <thread>

#include "tests/realserver/pg_fixture.h"
#include "tests/support/broker_admin.h"
#include "tests/support/wait.h"

namespace dsb::realserver {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The target line of `status` at `socket` (empty when missing).
boost::json::object TargetStatus(const std::filesystem::path& socket) {
  boost::json::object r = testing::AskBroker(socket, local_protocol::Op::kStatus);
  const boost::json::value* ts = r.if_contains("targets");
  if (ts == nullptr || !ts->is_array() || ts->as_array().empty()) return {};
  return ts->as_array()[0].as_object();
}

std::string Str(const boost::json::object& o, const char* key) {
  const boost::json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The broker log's limit changes and refusal lines (figures for the docs).
void PrintLimitLines(const std::string& log) {
  std::size_t pos = 0;
  while (pos < log.size()) {
    const std::size_t end = std::min(log.find('\n', pos), log.size());
    const std::string line = log.substr(pos, end - pos);
    if (line.find("limit ") != std::string::npos &&
        (line.find(" -> ") != std::string::npos || line.find("refused") != std::string::npos)) {
      std::printf("  %s\n", line.c_str());
    }
    pos = end + 1;
  }
}

// The loads run long enough for the last steps to the cap on a loaded machine: each step needs
// two refusals within 10 s, and near the cap they come seconds apart (a local CI run of
// 2026-12-07 reached 13 after 11 s of a 12 s load and no refusal came after it ended).
constexpr double kDiscoveryLoadSeconds = 25;

class PgDiscovery : public PgFixture {
 protected:
  // Converges from above: 20 -> 12 within a few refusals, then PostgreSQL refuses no one.
  // `socket` is where status is asked (a non-coordinator broker in the cluster case).
  void ExpectConvergesTo12(const std::filesystem::path& socket,
                           const std::vector<std::unique_ptr<LoadRun>>& loads, const char* what);
};

void PgDiscovery::ExpectConvergesTo12(const std::filesystem::path& socket,
                                      const std::vector<std::unique_ptr<LoadRun>>& loads,
                                      const char* what) {
  testing::PgServer& server = server_;
  const std::uint64_t before = server.RoleRefusals();
  const auto start = Clock::now();
  const bool converged = tools_test::WaitUntil(
      [&] { return Num(TargetStatus(socket), "limit") == PgFixture::kCap; }, 30s);
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  const std::uint64_t until = server.RoleRefusals() - before;
  const boost::json::object st = TargetStatus(socket);
  std::printf("%s: limit 20 -> %.0f (source %s) in %.2f s after the load started, PostgreSQL "
              "refused %llu session(s) until then (target: at most 2 x (20 - 12) = 16)\n",
              what, Num(st, "limit"), Str(st, "limit_source").c_str(), took,
              static_cast<unsigned long long>(until));
  std::fflush(stdout);
  for (const auto& b : brokers_) PrintLimitLines(b->log());
  ASSERT_TRUE(converged) << "limit stayed " << Num(st, "limit") << "\n" << server.Log();
  EXPECT_EQ(Str(st, "limit_source"), "discovered");
  // The target is 2 x (20 - 12) = 16 (met in most runs: docs/realserver.md). Rule F2
  // bounds the refusals it takes as evidence by 16; attempts admitted before a lowering and
  // refused after it come on top, and how many depends on timing: the hard bound here is the
  // 16 of evidence plus one per action thread (24), a margin over what load does (27 seen in a
  // local CI run of 2026-12-06 beside an etcd suite; the old bound of 24 failed there) and far
  // below what no discovery gives (the count is then in the hundreds).
  EXPECT_LE(until, 16u + 24u) << "far more refusals than 2 x (configured - real cap)";
  // After convergence: the rest of the run, PostgreSQL refuses no one, and the limit stays.
  const std::uint64_t after_start = server.RoleRefusals();
  for (const auto& l : loads) FinishLoad(*l);
  const std::uint64_t after = server.RoleRefusals() - after_start;
  const boost::json::object end = TargetStatus(socket);
  std::printf("%s: after convergence PostgreSQL refused %llu; limit %.0f at the end\n", what,
              static_cast<unsigned long long>(after), Num(end, "limit"));
  EXPECT_EQ(after, 0u) << server.Log();
  EXPECT_EQ(Num(end, "limit"), PgFixture::kCap) << "the limit did not stay at the real cap";
}

TEST_F(PgDiscovery, OneBrokerToldTwentyLearnsTwelveFromRefusals) {
  testing::BrokerProcess& broker = StartBroker(TargetToml(20, 0, "0s"));
  ASSERT_TRUE(broker.running()) << broker.log();
  std::vector<std::unique_ptr<LoadRun>> loads;
  loads.push_back(StartLoad(&broker, PgSeconds(kDiscoveryLoadSeconds), {"--report-refusals"}));
  ExpectConvergesTo12(broker.socket(), loads, "one broker");
}

TEST_F(PgDiscovery, ThreeBrokersToldTwentyLearnTwelveAtTheCoordinator) {
  StartCluster(TargetToml(20, 0, "0s"));
  ASSERT_EQ(brokers_.size(), 3u);
  std::vector<std::unique_ptr<LoadRun>> loads;
  for (auto& b : brokers_) {
    loads.push_back(
        StartLoadOn(b->socket(), 1, PgSeconds(kDiscoveryLoadSeconds), {"--report-refusals"}));
  }
  // Asked at ws2: the coordinator (ws1) keeps the limit.
  ExpectConvergesTo12(brokers_[1]->socket(), loads, "three brokers");
}

// limit_command = psql reading rolconnlimit: the broker serves clients only after the answer,
// so nobody sees the configured 20.
TEST_F(PgDiscovery, LimitCommandReadsTheRoleCap) {
  const std::string cmd = server_.RoleLimitCommand();
  std::string escaped;
  for (char c : cmd) {
    if (c == '\\' || c == '"') escaped += '\\';
    escaped += c;
  }
  testing::BrokerProcess& broker =
      StartBroker(TargetToml(20, 0, "0s", "limit_command = \"" + escaped + "\"\nlimit_poll = \"1s\"\ndiscover = false\n"));
  ASSERT_TRUE(broker.running()) << broker.log();
  boost::json::object st = TargetStatus(broker.socket());
  EXPECT_EQ(Num(st, "limit"), kCap) << boost::json::serialize(st) << "\n" << broker.log();
  EXPECT_EQ(Str(st, "limit_source"), "query");
  // The server's cap changes: the next poll follows it.
  std::string error;
  ASSERT_TRUE(server_.SetRoleLimit(9, error)) << error;
  EXPECT_TRUE(tools_test::WaitUntil([&] { return Num(TargetStatus(broker.socket()), "limit") == 9; },
                                    10s))
      << broker.log();
}

TEST_F(PgDiscovery, ProbeCountsTheRoleCapAndApplies) {
  testing::BrokerProcess& broker = StartBroker(TargetToml(20, 0, "0s"));
  ASSERT_TRUE(broker.running()) << broker.log();
  const testing::Outcome probe =
      testing::RunProgram({testing::BinPath("dsbctl"), "--socket", broker.socket().string(), "probe",
                           "pg", "--server", server_.RoleUrl(), "--apply", "--json"},
                          120s);
  const std::string& out = probe.output;
  std::printf("dsbctl probe: %s", out.c_str());
  EXPECT_EQ(probe.exit_code, 0) << out;
  EXPECT_NE(out.find("\"cap\":12"), std::string::npos) << out;
  const boost::json::object st = TargetStatus(broker.socket());
  EXPECT_EQ(Num(st, "limit"), kCap);
  EXPECT_EQ(Str(st, "limit_source"), "operator");
  // The probe closed what it opened (confirmed): PostgreSQL counts none of its sessions now.
  EXPECT_EQ(server_.RoleSessions(), 0);
}

}  // namespace
}  // namespace dsb::realserver
