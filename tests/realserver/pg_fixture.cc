#include "tests/realserver/pg_fixture.h"
#include "tests/support/test_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <random>
#include <regex>
#include <thread>

#include "tests/support/broker_admin.h"

namespace dsb::realserver {

using namespace std::chrono_literals;

double PgSeconds(double fallback) {
  const char* env = std::getenv("DSB_PG_SECONDS");
  if (env == nullptr || *env == '\0') return fallback;
  const double v = std::atof(env);
  return v > 0 ? v : fallback;
}

void PgFixture::SetUp() {
  const std::string why = testing::PostgresUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << "PostgreSQL suite skipped: " << why;
  ASSERT_TRUE(dir_.ok());
  testing::PgServer::Options options;
  options.role_limit = kCap;
  options.settings = ServerSettings();
  std::string error;
  ASSERT_TRUE(server_.Start(options, error)) << error;
}

void PgFixture::TearDown() {
  for (auto& b : brokers_) b->Stop();
  brokers_.clear();
  server_.Stop();
}

std::string PgFixture::TargetToml(int limit, int reserve, const std::string& quarantine,
                                  const std::string& extra_keys) {
  return "[[targets]]\nname = \"pg\"\nlimit = " + std::to_string(limit) +
         "\nreserve = " + std::to_string(reserve) + "\nquarantine = \"" + quarantine + "\"\n" +
         extra_keys + (extra_keys.empty() || extra_keys.back() == '\n' ? "" : "\n");
}

testing::BrokerProcess& PgFixture::StartBroker(const std::string& targets_toml) {
  const std::string id = "pg" + std::to_string(::getpid()) + "b" + std::to_string(brokers_.size());
  const std::filesystem::path config = dir_.File(id + ".toml");
  const std::filesystem::path socket = dir_.File(id + ".sock");
  std::ofstream(config) << "[broker]\nid = \"" << id << "\"\nsocket = \"" << socket.string()
                        << "\"\nshm_prefix = \"" << id << "\"\n\n"
                        << targets_toml;
  brokers_.push_back(std::make_unique<testing::BrokerProcess>(
      config, socket, std::vector<std::string>{"dsb-" + id + "-pg"}));
  testing::BrokerProcess& b = *brokers_.back();
  EXPECT_TRUE(b.Start()) << b.log();
  return b;
}

std::unique_ptr<LoadRun> PgFixture::StartLoad(testing::BrokerProcess* broker, double seconds,
                                              const std::vector<std::string>& extra) {
  if (broker != nullptr) return StartLoadOn(broker->socket(), 3, seconds, extra);
  std::vector<std::string> all = {"--no-broker"};
  all.insert(all.end(), extra.begin(), extra.end());
  return StartLoadOn({}, 3, seconds, all);
}

std::unique_ptr<LoadRun> PgFixture::StartLoadOn(const std::filesystem::path& socket, int instances,
                                                double seconds,
                                                const std::vector<std::string>& extra) {
  static int counter = 0;
  auto run = std::make_unique<LoadRun>();
  const std::string stem = "load" + std::to_string(counter++);
  run->out = dir_.File(stem + ".json");
  run->err = dir_.File(stem + ".err");
  run->seconds = seconds;
  std::vector<std::string> argv = {tools_test::BinPath("dsb-load"),
                                   "--server",
                                   server_.RoleUrl(),
                                   "--instances",
                                   std::to_string(instances),
                                   "--threads",
                                   "8",
                                   "--duration",
                                   std::to_string(seconds)};
  if (!socket.empty()) argv.insert(argv.end(), {"--socket", socket.string(), "--target", "pg"});
  argv.insert(argv.end(), extra.begin(), extra.end());
  EXPECT_TRUE(run->process.Start(argv, run->out, run->err));
  return run;
}

boost::json::object PgFixture::FinishLoad(LoadRun& run) {
  const auto limit = std::chrono::milliseconds(static_cast<long>(run.seconds * 1000)) + 60s;
  const auto status = run.process.Wait(limit);
  EXPECT_TRUE(status.has_value()) << "dsb-load did not end; stderr:\n"
                                  << tools_test::ReadFile(run.err);
  std::string out = tools_test::ReadFile(run.out);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(out.substr(out.rfind('\n') + 1), ec);
  EXPECT_TRUE(!ec && v.is_object()) << "no summary; stdout:\n"
                                    << out << "\nstderr:\n"
                                    << tools_test::ReadFile(run.err);
  return !ec && v.is_object() ? v.as_object() : boost::json::object{};
}

pid_t PgFixture::InstancePid(const LoadRun& run, int index) {
  const std::regex re("dsb-load: instance " + std::to_string(index) + " pid ([0-9]+)");
  pid_t pid = -1;
  tools_test::WaitUntil(
      [&] {
        std::smatch m;
        const std::string err = tools_test::ReadFile(run.err);
        if (std::regex_search(err, m, re)) pid = static_cast<pid_t>(std::stol(m[1].str()));
        return pid > 0;
      },
      10s);
  return pid;
}

namespace {
}  // namespace

void PgFixture::StartCluster(const std::string& targets_toml) {
  testing::TestClusterSpec spec;
  spec.stem = "pgc" + std::to_string(::getpid());
  spec.broker_keys = "system_slots = 1\nfloor = 0\n";
  spec.targets_toml = targets_toml;
  const testing::TestClusterFiles files = testing::WriteTestCluster(dir_.File(""), spec);
  for (std::size_t i = 0; i < files.configs.size(); ++i) {
    brokers_.push_back(std::make_unique<testing::BrokerProcess>(
        files.configs[i], files.sockets[i], std::vector<std::string>{files.Segment(spec, i, "pg")}));
  }
  for (auto& b : brokers_) ASSERT_TRUE(b->Start()) << b->log();
  ASSERT_TRUE(
      tools_test::WaitUntil([&] { return testing::LearningOver(brokers_[0]->socket()); }, 20s))
      << "the coordinator never left learning mode";
}

bool PgFixture::WaitForSessions(int sessions) {
  return tools_test::WaitUntil([&] { return server_.RoleSessions() >= sessions; }, 20s);
}

Judgement PgFixture::Judge(std::chrono::milliseconds window) {
  Judgement j;
  const std::uint64_t before = server_.RoleRefusals();
  testing::PgSampler sampler(server_);
  std::string error;
  EXPECT_TRUE(sampler.Start(error)) << error;
  // A measurement window, not a synchronisation: the sampler works while the test waits.
  std::this_thread::sleep_for(window);
  j.sessions = sampler.Stop();
  j.refusals = server_.RoleRefusals() - before;
  j.utilization = j.sessions.mean / kCap;
  return j;
}

double Num(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return -1;
  boost::system::error_code ec;
  const double d = v->to_number<double>(ec);
  return ec ? -1 : d;
}

}  // namespace dsb::realserver
