// Review of issue 11: a change dsbctl makes that the broker applies but cannot
// write to its state_dir makes dsbctl exit 3 and say what a restart would do
// (it exited 0 before); a SIGHUP in the first moments of a start is held, not
// fatal. Real brokers on loopback, the real dsbctl.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

Outcome Dsbctl(const fs::path& socket, std::vector<std::string> args) {
  args.insert(args.begin(), {BinPath("dsbctl"), "--socket", socket.string()});
  return RunProgram(args, 20000ms);
}

TEST(StatePersist, DsbctlExits3WhenTheChangeCannotBeWrittenAndSaysWhatARestartDoes) {
  ScratchDir dir("dsb-persist");
  const fs::path state = dir.path() / "state";
  TestClusterSpec spec;
  spec.brokers = 2;
  spec.stem = UniqueName("sp").substr(0, 20);
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 12\n";
  spec.broker_keys = "system_slots = 1\n";
  spec.broker_extra += "state_dir = \"" + state.string() + "\"\n";
  const TestClusterFiles files = WriteTestCluster(dir.path(), spec);
  std::vector<std::unique_ptr<BrokerProcess>> brokers;
  for (std::size_t i = 0; i < files.configs.size(); ++i) {
    brokers.push_back(std::make_unique<BrokerProcess>(
        files.configs[i], files.sockets[i],
        std::vector<std::string>{files.Segment(spec, i, "exch01")}));
    ASSERT_TRUE(brokers.back()->Start()) << brokers.back()->log();
  }
  // Written: exit 0.
  Outcome drained = Dsbctl(files.sockets[0], {"drain", "ws2"});
  EXPECT_EQ(drained.exit_code, 0) << drained.output;
  Outcome undrained = Dsbctl(files.sockets[0], {"undrain", "ws2"});
  EXPECT_EQ(undrained.exit_code, 0) << undrained.output;

  // A folder where the coordinator's files go: the rename onto it fails
  // (root ignores permissions, a folder it cannot replace).
  fs::remove(state / "ws1.modes");
  fs::create_directory(state / "ws1.modes");
  drained = Dsbctl(files.sockets[1], {"drain", "ws2"});
  EXPECT_EQ(drained.exit_code, 3) << drained.output;
  EXPECT_NE(drained.output.find("broker ws2 drained"), std::string::npos) << drained.output;
  EXPECT_NE(drained.output.find("a restart of coordinator ws1 would start from the revoke/drain "
                                "state " + (state / "ws1.modes").string()),
            std::string::npos)
      << drained.output;
  // Applied all the same.
  const Outcome leases = Dsbctl(files.sockets[0], {"leases", "--json"});
  EXPECT_NE(leases.output.find("\"mode\":\"drained\""), std::string::npos) << leases.output;

  fs::remove(state / "ws1.limits");
  fs::create_directory(state / "ws1.limits");
  const Outcome limited = Dsbctl(files.sockets[1], {"set-limit", "exch01", "10", "--json"});
  EXPECT_EQ(limited.exit_code, 3) << limited.output;
  EXPECT_NE(limited.output.find("\"persisted\":false"), std::string::npos) << limited.output;
  EXPECT_NE(limited.output.find("\"limit\":10"), std::string::npos) << limited.output;
  EXPECT_NE(limited.output.find("a restart would start from the limits it held before"),
            std::string::npos)
      << limited.output;

  // Once the files can be written again, exit 0.
  fs::remove(state / "ws1.limits");
  fs::remove(state / "ws1.modes");
  const Outcome again = Dsbctl(files.sockets[0], {"set-limit", "exch01", "11"});
  EXPECT_EQ(again.exit_code, 0) << again.output;
  undrained = Dsbctl(files.sockets[0], {"undrain", "ws2"});
  EXPECT_EQ(undrained.exit_code, 0) << undrained.output;
}

// Whether `pid` blocks SIGHUP now (/proc/<pid>/status SigBlk, bit 0).
bool BlocksHup(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("SigBlk:", 0) != 0) continue;
    return (std::stoull(line.substr(7), nullptr, 16) & 1u) != 0;
  }
  return false;
}

// A SIGHUP sent while the broker starts (once main holds it back, before its
// signal_set exists) neither kills it nor is lost: it starts, and the reload
// runs. The start takes a few ms, so a round may reach " ready on " before
// the poll sees the mask: that round sends its HUP after ready (it must
// survive too). At least one of up to kRounds rounds must have seen SIGHUP
// held; before the fix none could (it was never held) and an early HUP ended
// the broker by the default action.
TEST(StatePersist, ASighupDuringTheStartIsHeldNotFatal) {
  ScratchDir dir("dsb-hup");
  constexpr int kRounds = 40;
  constexpr int kEnough = 3;  // rounds that sent the HUP while it was held
  int held_rounds = 0;
  for (int round = 0; round < kRounds && held_rounds < kEnough; ++round) {
    const std::string prefix = UniqueName("hup").substr(0, 20);
    BrokerProcess shape(dir.path(), prefix, {BrokerTarget{}});
    Process p;
    ASSERT_TRUE(p.Start({BinPath("dsb-broker"), "--config", shape.config_path().string()}));
    bool held = false;
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (!held && p.alive() && std::chrono::steady_clock::now() < end &&
           p.output().find(" ready on ") == std::string::npos) {
      held = BlocksHup(p.pid());
    }
    if (held) ++held_rounds;
    ASSERT_TRUE(p.alive()) << "round " << round << "\n" << p.output();
    ASSERT_EQ(::kill(p.pid(), SIGHUP), 0);
    EXPECT_TRUE(p.WaitForOutput(" ready on ", 20s)) << "round " << round << "\n" << p.output();
    EXPECT_TRUE(p.WaitForOutput("SIGHUP: reopening the log", 20s))
        << "round " << round << (held ? " (sent while held)" : " (sent after ready)")
        << ": the SIGHUP was lost\n" << p.output();
    EXPECT_TRUE(p.alive()) << "round " << round << "\n" << p.output();
    EXPECT_EQ(p.Stop(SIGTERM, 60s), 0) << "round " << round << "\n" << p.output();
    shape.RemoveSegments();
    fs::remove(dir.path() / "dsb.sock");
    if (HasFatalFailure() || HasFailure()) break;
  }
  std::printf("rounds with the HUP sent while held: %d\n", held_rounds);
  EXPECT_GE(held_rounds, 1) << "no round saw SIGHUP held during the start";
}

}  // namespace
}  // namespace dsb::testing
