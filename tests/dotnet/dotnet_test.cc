// The .NET wrapper (dotnet/Dsb, Dsb.Net.dll) under Mono against a real
// broker and the built libdsb.so: each test starts a broker, runs one case of
// DsbTests.exe (tests/dotnet/DsbTests.cs) under `mono` and reads its verdict.
// [DllImport("dsb")] resolves through Dsb.Net.dll.config (libdsb.so.0) and
// LD_LIBRARY_PATH, pointed at this build's library folder.
//
// Skipped, saying so, when the build found no Mono (mcs/mono: Debian
// mono-devel); DSB_DOTNET_DIR is empty then.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/unique_name.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;
using testing::Process;
using testing::ScratchDir;
using testing::UniqueName;

constexpr int kLimit = 4;  // one client: its system slot + 3 action slots
constexpr int kActions = kLimit - 1;

class DotnetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(DSB_DOTNET_DIR).empty()) {
      GTEST_SKIP() << "Mono not found when the build was configured (mcs and mono, Debian "
                      "package mono-devel): the .NET wrapper was neither built nor tested";
    }
    ASSERT_TRUE(dir_.ok());
    // A single-machine broker; limit discovery off, so the refusals the
    // cases report do not lower the limit under them.
    prefix_ = UniqueName("dnt");
    const auto socket = dir_.path() / (prefix_ + ".sock");
    const auto config = dir_.path() / (prefix_ + ".toml");
    std::ofstream f(config);
    f << "[broker]\nid = \"" << prefix_ << "\"\nsocket = \"" << socket.string()
      << "\"\nshm_prefix = \"" << prefix_ << "\"\n\n[[targets]]\nname = \"exch01\"\nlimit = "
      << kLimit << "\nreserve = 0\nquarantine = \"0s\"\ndiscover = false\n";
    f.close();
    broker_ = std::make_unique<BrokerProcess>(
        config, socket, std::vector<std::string>{"dsb-" + prefix_ + "-exch01"});
    ASSERT_TRUE(broker_->Start()) << broker_->log();
  }

  std::vector<std::string> MonoArgs(const std::string& test_case) const {
    return {DSB_MONO, "--debug", std::string(DSB_DOTNET_DIR) + "/DsbTests.exe", test_case,
            broker_->socket().string(), std::to_string(kActions)};
  }

  static testing::SpawnOptions MonoEnv() {
    testing::SpawnOptions o;
    o.env = {std::string("LD_LIBRARY_PATH=") + DSB_LIB_DIR};
    return o;
  }

  // Runs one case to its end; its output says which check failed.
  void RunCase(const std::string& test_case) {
    const testing::Outcome r = testing::RunProgram(MonoArgs(test_case), 120s, MonoEnv());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("PASS " + test_case), std::string::npos) << r.output;
  }

  ScratchDir dir_{"dsb-dotnet"};
  std::string prefix_;
  std::unique_ptr<BrokerProcess> broker_;
};

// N permits, the (N+1)th times out, dispose gives back (once), cancellation,
// ShouldYield false, reports, a permit outliving its disposed client.
TEST_F(DotnetTest, PermitsComeAndGoThroughTheWrapper) { RunCase("permits"); }

// Permits dropped without Dispose come back when the GC collects them, and
// the native client closes once its last leaked permit is collected.
TEST_F(DotnetTest, LeakedPermitsComeBackWhenCollected) { RunCase("leak"); }

// The C ABI's failures arrive as DsbException with code and message; .NET's
// own argument checks as ArgumentException and kin.
TEST_F(DotnetTest, BadArgumentsAndUnknownTargetsThrowWithTheirMessage) { RunCase("errors"); }

// The broker stops under a connected client: the log handler hears it, a
// report then fails with BrokerUnavailable, as does a new connect.
TEST_F(DotnetTest, AStoppedBrokerIsBrokerUnavailable) {
  Process mono;
  ASSERT_TRUE(mono.Start(MonoArgs("broker-stop"), MonoEnv())) << mono.error();
  ASSERT_TRUE(mono.WaitForOutput("READY", 60s)) << mono.output();
  broker_->Stop(SIGTERM);
  ASSERT_TRUE(mono.Wait(120s).has_value()) << mono.output();
  EXPECT_EQ(mono.exit_code(), 0) << mono.output();
  EXPECT_NE(mono.output().find("PASS broker-stop"), std::string::npos) << mono.output();
}

// The example (examples/dotnet/ActionLoop.cs): action threads against the
// broker for a short while; it counts its own open sessions and fails if
// they ever exceed what the broker grants.
TEST_F(DotnetTest, ExampleActionLoopRuns) {
  const testing::Outcome r = testing::RunProgram(
      {DSB_MONO, "--debug", std::string(DSB_DOTNET_DIR) + "/ActionLoop.exe", "--socket",
       broker_->socket().string(), "--target", "exch01", "--threads", "6", "--seconds", "2",
       "--max-sessions", std::to_string(kActions)},
      120s, MonoEnv());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("done:"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace dsb
