// A cluster file the lease core would refuse, and a start that fails after it created its
// segments, with the real dsb-broker: `--check` and the start refuse with the file and
// the key, and nothing of the failed start is left behind (segments, socket, lock files,
// an unclean mark in the state file).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/broker_process.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"

namespace {

using dsb::testing::BrokerProcess;
using dsb::testing::ScratchDir;
using dsb::testing::TestClusterFiles;
using dsb::testing::TestClusterSpec;
using dsb::testing::UniqueName;
namespace fs = std::filesystem;

const char* kTarget = "[[targets]]\nname = \"exch01\"\nlimit = 8\n";

// Runs dsb-broker with `args` to its exit; returns the exit code and its output.
int RunBroker(const std::string& args, std::string* output) {
  return BrokerProcess::RunArgsToExit(args, output);
}

bool SegmentExists(const std::string& segment) { return fs::exists("/dev/shm/" + segment); }

// The port of the first broker's address in a cluster file written by WriteTestCluster.
std::uint16_t FirstBrokerPort(const fs::path& cluster_file) {
  std::ifstream in(cluster_file);
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  const std::size_t at = s.find("address = \"127.0.0.1:");
  if (at == std::string::npos) return 0;
  return static_cast<std::uint16_t>(std::stoi(s.substr(at + 21)));
}

TEST(BadClusterConfig, DrainZeroIsRefusedByCheckAndByStartNamingFileAndKey) {
  ScratchDir dir("dsb-badcfg");
  TestClusterSpec spec;
  spec.brokers = 1;
  spec.stem = UniqueName("bc").substr(0, 20);
  spec.cluster_keys = "term = \"1s\"\ndrain = \"0s\"\n";
  spec.targets_toml = kTarget;
  const TestClusterFiles files = dsb::testing::WriteTestCluster(dir.path(), spec);
  const std::string segment = files.Segment(spec, 0, "exch01");
  const std::string cluster_file = (dir.path() / "cluster.toml").string();

  std::string check;
  EXPECT_NE(RunBroker("--check --config '" + files.configs[0].string() + "'", &check), 0)
      << check;
  EXPECT_NE(check.find(cluster_file + ": cluster.drain: must be between 1ms and 24h"),
            std::string::npos)
      << check;

  std::string start;
  EXPECT_NE(BrokerProcess::RunToExit(files.configs[0], &start), 0) << start;
  EXPECT_NE(start.find(cluster_file + ": cluster.drain"), std::string::npos) << start;
  EXPECT_FALSE(SegmentExists(segment));
  EXPECT_FALSE(fs::exists(files.sockets[0]));
}

TEST(BadClusterConfig, StartFailingAfterItsSegmentsRemovesWhatItCreated) {
  ScratchDir dir("dsb-badcfg");
  TestClusterSpec spec;
  spec.brokers = 1;
  spec.stem = UniqueName("bs").substr(0, 20);
  spec.targets_toml = kTarget;
  spec.broker_extra = "state_dir = \"" + (dir.path() / "state").string() + "\"\n";
  const TestClusterFiles files = dsb::testing::WriteTestCluster(dir.path(), spec);
  const std::string segment = files.Segment(spec, 0, "exch01");
  const fs::path cluster_file = dir.path() / "cluster.toml";

  // The coordinator's port is taken: the start fails after segments and socket exist.
  const std::uint16_t port = FirstBrokerPort(cluster_file);
  ASSERT_NE(port, 0);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  // SO_REUSEADDR: `files` still holds the port reserved (not listening) for the broker.
  const int one = 1;
  ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << "port " << port;
  ASSERT_EQ(::listen(fd, 1), 0);

  std::string out;
  const int code = BrokerProcess::RunToExit(files.configs[0], &out);
  ::close(fd);
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("coordinator cannot listen on 127.0.0.1:" + std::to_string(port) + " (" +
                     cluster_file.string() + ": address of broker \"ws1\")"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("start failed; undone: socket"), std::string::npos) << out;
  EXPECT_FALSE(SegmentExists(segment)) << out;
  EXPECT_FALSE(fs::exists("/dev/shm/.dsb-lock-" + segment)) << out;
  EXPECT_FALSE(fs::exists(files.sockets[0])) << out;
  EXPECT_FALSE(fs::exists(files.sockets[0].string() + ".lock")) << out;

  // With the port free the same files start, and the failed start left no unclean mark
  // (it would hold capacity back for a quarantine).
  BrokerProcess broker(files.configs[0], files.sockets[0], {segment});
  ASSERT_TRUE(broker.Start()) << broker.log();
  EXPECT_EQ(broker.log().find("without a clean stop"), std::string::npos) << broker.log();
  EXPECT_EQ(broker.Stop(), 0);
}

}  // namespace
