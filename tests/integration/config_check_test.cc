// Issue 11: `dsb-broker --check` validates everything a start validates (one
// function, start_checks.h ValidateForStart) and prints the effective config,
// a broker file again with every default filled in. The real dsb-broker.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/broker_process.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::trunc) << text;
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
}

// dsb-broker --check on `config`: exit code, stdout alone in *out, stderr in *err.
int Check(const fs::path& config, std::string* out, std::string* err) {
  const fs::path err_file = config.string() + ".err";
  const int code = BrokerProcess::RunArgsToExit(
      "--check --config '" + config.string() + "' 2>'" + err_file.string() + "'", out);
  *err = ReadAll(err_file);
  fs::remove(err_file);
  return code;
}

// A single-machine broker file with only the required keys.
fs::path WriteMinimalBroker(const fs::path& dir, const std::string& extra = "") {
  const fs::path file = dir / "broker.toml";
  WriteAll(file, "[broker]\nid = \"ws1\"\nsocket = \"" + (dir / "run" / "dsb.sock").string() +
                     "\"\nshm_prefix = \"" + UniqueName("cc").substr(0, 20) + "\"\n" + extra +
                     "\n[[targets]]\nname = \"exch01\"\nlimit = 8\n");
  return file;
}

TEST(ConfigCheck, PrintsTheEffectiveConfigWithDefaultsAndItParsesBack) {
  ScratchDir dir("dsb-check");
  const fs::path file = WriteMinimalBroker(dir.path());
  std::string out, err;
  ASSERT_EQ(Check(file, &out, &err), 0) << out << err;
  EXPECT_THAT(out, HasSubstr("OK (broker ws1, 1 target(s), single mode)"));
  // Every default written out.
  for (const char* line :
       {"log_level = \"info\"", "adopt_grace = \"5s\"", "max_clients = 1024",
        "max_unregistered = 64", "max_unregistered_per_uid = 16", "idle_timeout = \"5s\"",
        "reserve = 0", "slots = 64", "quarantine = \"0s\"", "release_cooldown = \"0s\"",
        "discover = true", "limit_increase_after = \"0s\"", "# admin_group: none",
        "# log_file: none"}) {
    EXPECT_THAT(out, HasSubstr(line)) << out;
  }
  // Fed back to --check, the output is valid and says the same.
  const fs::path again = dir.path() / "effective.toml";
  WriteAll(again, out);
  std::string out2, err2;
  ASSERT_EQ(Check(again, &out2, &err2), 0) << out2 << err2 << "\n--- input:\n" << out;
  auto body = [](const std::string& s) { return s.substr(s.find("[broker]")); };
  EXPECT_EQ(body(out2), body(out));
}

TEST(ConfigCheck, ClusterModeShowsTheKeyFilePathButNotTheKeyAndParsesBack) {
  ScratchDir dir("dsb-check");
  TestClusterSpec spec;
  spec.brokers = 2;
  spec.stem = UniqueName("ck").substr(0, 20);
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 8\n";
  spec.broker_extra = "state_dir = \"" + (dir.path() / "state").string() + "\"\n";
  const TestClusterFiles files = WriteTestCluster(dir.path(), spec);
  std::string out, err;
  ASSERT_EQ(Check(files.configs[0], &out, &err), 0) << out << err;
  EXPECT_THAT(out, HasSubstr("cluster mode"));
  EXPECT_THAT(out, HasSubstr("key_file = \"" + (dir.path() / "cluster.key").string() + "\""));
  const std::string key = ReadAll(dir.path() / "cluster.key");
  ASSERT_FALSE(key.empty());
  std::string first_line = key.substr(0, key.find('\n'));
  EXPECT_THAT(out, Not(HasSubstr(first_line))) << "the key was printed";
  EXPECT_THAT(out, HasSubstr("# coordinator = \"ws1\""));
  EXPECT_THAT(out, HasSubstr("listen = \"127.0.0.1:"));
  const fs::path again = dir.path() / "effective.toml";
  WriteAll(again, out);
  std::string out2, err2;
  EXPECT_EQ(Check(again, &out2, &err2), 0) << out2 << err2 << "\n--- input:\n" << out;
}

// ledger = "etcd" is no longer refused (issue 13): --check asks etcd's health
// (tests/etcd/etcd_check_test.cc) and brokers run on it (etcd_broker_test.cc).

// The cases --check let through before issue 11 and the start refused.
TEST(ConfigCheck, RefusesWhatTheStartRefuses) {
  ScratchDir dir("dsb-check");
  TestClusterSpec spec;
  spec.brokers = 2;
  spec.stem = UniqueName("cr").substr(0, 20);
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 8\n";
  const fs::path state = dir.path() / "state";
  spec.broker_extra = "state_dir = \"" + state.string() + "\"\n";
  const TestClusterFiles files = WriteTestCluster(dir.path(), spec);
  const fs::path config = files.configs[0];
  std::string out, err;
  ASSERT_EQ(Check(config, &out, &err), 0) << out << err;

  // A malformed epoch counter in state_dir.
  fs::create_directory(state);
  fs::permissions(state, fs::perms::owner_all);
  WriteAll(state / "ws1.epoch", "not a number\n");
  EXPECT_EQ(Check(config, &out, &err), 2) << out << err;
  EXPECT_THAT(err, HasSubstr((state / "ws1.epoch").string() + ": not a decimal number"));
  fs::remove(state / "ws1.epoch");

  // A malformed state file is no reason to refuse: the start assumes the
  // worst (ClientTest.DamagedStateFileAssumesTheWorst), so --check passes it.
  WriteAll(state / "ws1.state", "{ broken");
  EXPECT_EQ(Check(config, &out, &err), 0) << out << err;
  fs::remove(state / "ws1.state");
  ASSERT_EQ(Check(config, &out, &err), 0) << out << err;

  // A listen address that is a name, not an IP address.
  const std::string original = ReadAll(config);
  std::string named = original;
  named.insert(named.find("state_dir"), "listen = \"localhost:7\"\n");
  WriteAll(config, named);
  EXPECT_EQ(Check(config, &out, &err), 2) << out << err;
  EXPECT_THAT(err, HasSubstr("broker.listen localhost:7: 'localhost' is not an IP address"));

  // The listen port taken by another program (listening; no broker answers).
  std::string port;
  const int fd = dsb::testing::ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  std::string taken = original;
  taken.insert(taken.find("state_dir"), "listen = \"127.0.0.1:" + port + "\"\n");
  WriteAll(config, taken);
  EXPECT_EQ(Check(config, &out, &err), 2) << out << err;
  EXPECT_THAT(err, HasSubstr("broker.listen 127.0.0.1:" + port + ": cannot bind"));
  EXPECT_THAT(err, HasSubstr("another program listens there"));
  ::close(fd);
  EXPECT_EQ(Check(config, &out, &err), 0) << out << err;

  // The key file missing (the start needs it for every peer).
  WriteAll(config, original);
  fs::remove(dir.path() / "cluster.key");
  EXPECT_EQ(Check(config, &out, &err), 2) << out << err;
  EXPECT_THAT(err, HasSubstr("broker.key_file"));
}


// Review of issue 11: a damaged <id>.limits refused by --check and by the
// start alike, with exit 2 (a restart cannot mend it) and the file named;
// never a start from the configured, maybe higher, limit.
TEST(ConfigCheck, ADamagedLimitsFileIsRefusedByCheckAndStartWithExit2) {
  ScratchDir dir("dsb-check");
  const fs::path state = dir.path() / "state";
  fs::create_directory(state);
  fs::permissions(state, fs::perms::owner_all);
  const fs::path file =
      WriteMinimalBroker(dir.path(), "state_dir = \"" + state.string() + "\"\n");
  std::string out, err;
  ASSERT_EQ(Check(file, &out, &err), 0) << out << err;
  for (const char* damaged :
       {"{ broken", "{\"version\":1,\"targets\":{\"exch01\":{\"limit\":0}}}"}) {
    WriteAll(state / "ws1.limits", damaged);
    EXPECT_EQ(Check(file, &out, &err), 2) << damaged << "\n" << out << err;
    EXPECT_THAT(err, HasSubstr("limits file " + (state / "ws1.limits").string())) << damaged;
    EXPECT_THAT(err, HasSubstr("fix it or remove it")) << damaged;
    std::string start;
    EXPECT_EQ(BrokerProcess::RunToExit(file, &start), 2) << damaged << "\n" << start;
    EXPECT_THAT(start, HasSubstr("limits file " + (state / "ws1.limits").string()));
  }
  // A sound file with a lower operator limit passes.
  WriteAll(state / "ws1.limits",
           "{\"version\":1,\"targets\":{\"exch01\":{\"limit\":5,\"source\":\"operator\","
           "\"base\":5,\"base_source\":\"operator\"}}}\n");
  EXPECT_EQ(Check(file, &out, &err), 0) << out << err;
}

// Review of issue 11: a damaged <id>.modes (revoke/drain state) stopped the
// coordinator's start with exit 1 while --check said OK: now both refuse it,
// exit 2, naming the file.
TEST(ConfigCheck, ADamagedModesFileIsRefusedByCheckAndTheCoordinatorsStartWithExit2) {
  ScratchDir dir("dsb-check");
  TestClusterSpec spec;
  spec.brokers = 2;
  spec.stem = UniqueName("cm").substr(0, 20);
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 8\n";
  const fs::path state = dir.path() / "state";
  spec.broker_extra = "state_dir = \"" + state.string() + "\"\n";
  const TestClusterFiles files = WriteTestCluster(dir.path(), spec);
  fs::create_directory(state);
  fs::permissions(state, fs::perms::owner_all);
  std::string out, err;
  ASSERT_EQ(Check(files.configs[0], &out, &err), 0) << out << err;
  for (const char* damaged : {"not json", "{\"brokers\":{\"ws2\":{\"mode\":\"sleepy\"}}}",
                              "{\"brokers\":{\"ws2\":{\"mode\":\"drained\","
                              "\"revoked_targets\":7}}}"}) {
    WriteAll(state / "ws1.modes", damaged);
    EXPECT_EQ(Check(files.configs[0], &out, &err), 2) << damaged << "\n" << out << err;
    EXPECT_THAT(err, HasSubstr("revoke/drain file " + (state / "ws1.modes").string()))
        << damaged;
    EXPECT_THAT(err, HasSubstr("fix it or remove it")) << damaged;
    std::string start;
    EXPECT_EQ(BrokerProcess::RunToExit(files.configs[0], &start), 2) << damaged << "\n" << start;
    EXPECT_THAT(start, HasSubstr("revoke/drain file " + (state / "ws1.modes").string()));
    EXPECT_FALSE(fs::exists(files.sockets[0]));
  }
  WriteAll(state / "ws1.modes", "{\"brokers\":{\"ws2\":{\"mode\":\"drained\","
                                "\"revoked_targets\":[]}}}\n");
  EXPECT_EQ(Check(files.configs[0], &out, &err), 0) << out << err;
}

// Review of issue 11: broker.metrics is checked as listen is: a host name and
// a taken port are refused by --check; the start refuses them with exit 2.
TEST(ConfigCheck, MetricsHostNameAndTakenPortAreRefusedByCheckAndStartWithExit2) {
  ScratchDir dir("dsb-check");
  const fs::path named = WriteMinimalBroker(dir.path(), "metrics = \"example.org:9100\"\n");
  std::string out, err;
  EXPECT_EQ(Check(named, &out, &err), 2) << out << err;
  EXPECT_THAT(err, HasSubstr("broker.metrics example.org:9100: the host must be an IP address"));
  std::string start;
  EXPECT_EQ(BrokerProcess::RunToExit(named, &start), 2) << start;

  std::string port;
  const int fd = dsb::testing::ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  const fs::path taken =
      WriteMinimalBroker(dir.path(), "metrics = \"127.0.0.1:" + port + "\"\n");
  EXPECT_EQ(Check(taken, &out, &err), 2) << out << err;
  EXPECT_THAT(err, HasSubstr("broker.metrics 127.0.0.1:" + port + ": cannot bind"));
  start.clear();
  EXPECT_EQ(BrokerProcess::RunToExit(taken, &start), 2) << start;
  EXPECT_THAT(start, HasSubstr("broker.metrics (127.0.0.1:" + port + "): cannot listen"));
  ::close(fd);
  EXPECT_EQ(Check(taken, &out, &err), 0) << out << err;
}

}  // namespace
}  // namespace dsb::testing
