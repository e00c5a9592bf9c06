// dsb-load as a real process against a real dsb-simserver.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "tests/tools/sim_server_process.h"

namespace dsb::tools_test {
namespace {

// The JSON summary: the last line of dsb-load's stdout.
boost::json::object Summary(const std::string& stdout_path) {
  std::string out = ReadFile(stdout_path);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const std::string last =
      out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(last, ec);
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "no JSON summary in: " << out;
    return {};
  }
  return v.as_object();
}

std::vector<std::string> LoadArgs(const SimServerProcess& server, std::vector<std::string> extra) {
  std::vector<std::string> argv = {BinPath("dsb-load"), "--no-broker", "--server",
                                   server.address(),    "--user",      "digiscope"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// The failure dsb exists to fix: two instances of 32 threads (+1 system session each) against
// Exchange's default cap of 32 get refused, and the server sits at its cap.
TEST(Load, TwoInstancesOf32ThreadsWithoutBrokerHitTheCap) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "32"});
  ASSERT_TRUE(server.ok());
  ChildProcess load;
  ASSERT_TRUE(load.Start(
      LoadArgs(server, {"--instances", "2", "--threads", "32", "--duration", "2", "--seed", "7"}),
      dir.File("load.out"), dir.File("load.err")));
  const auto status = load.Wait(milliseconds(20000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFile(dir.File("load.err"));
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_EQ(summary.at("mode").as_string(), "no-broker");
  EXPECT_EQ(Num(summary, "instances"), 2);
  EXPECT_EQ(Num(summary, "threads"), 32);
  EXPECT_EQ(Num(summary, "duration_s"), 2);
  EXPECT_GT(Num(summary, "refusals"), 0);
  EXPECT_GT(Num(summary, "actions"), 0);
  const auto& per_instance = summary.at("actions_per_instance").as_array();
  ASSERT_EQ(per_instance.size(), 2u);
  double sum = 0;
  for (const auto& n : per_instance) {
    EXPECT_GT(n.to_number<double>(), 0);
    sum += n.to_number<double>();
  }
  EXPECT_EQ(sum, Num(summary, "actions"));
  EXPECT_TRUE(summary.at("acquire_wait_ms").is_object());
  EXPECT_TRUE(summary.at("errors").as_object().empty()) << boost::json::serialize(summary);

  const boost::json::object s = server.UserStats("digiscope");
  EXPECT_EQ(Num(s, "peak"), 32);
  EXPECT_EQ(Num(s, "limit"), 32);
  EXPECT_EQ(Num(s, "refused"), Num(summary, "refusals"));
  EXPECT_EQ(Num(s, "opened"), Num(summary, "opens"));
  EXPECT_EQ(Num(s, "over_limit_events"), 0);
  EXPECT_EQ(Num(s, "current"), 0);  // every instance closed its sessions on the way out
}

TEST(Load, UnderTheCapNothingIsRefused) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "32"});
  ASSERT_TRUE(server.ok());
  ChildProcess load;
  // 2 x (4 + 1) = 10 <= 32.
  ASSERT_TRUE(load.Start(LoadArgs(server, {"--instances", "2", "--threads", "4", "--duration",
                                           "0.5", "--hold-dist", "exp", "--hold-ms-mean", "2"}),
                         dir.File("load.out"), dir.File("load.err")));
  ASSERT_TRUE(load.Wait(milliseconds(15000)).has_value());
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_EQ(Num(summary, "refusals"), 0);
  EXPECT_GT(Num(summary, "actions"), 0);
  const boost::json::object s = server.UserStats("digiscope");
  EXPECT_LE(Num(s, "peak"), 10);
  EXPECT_GE(Num(s, "peak"), 3);  // system sessions + at least one action
}

TEST(Load, SigtermStopsCleanlyAndClosesEverySession) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "32"});
  ASSERT_TRUE(server.ok());
  ChildProcess load;
  ASSERT_TRUE(
      load.Start(LoadArgs(server, {"--instances", "2", "--threads", "3", "--duration", "60"}),
                 dir.File("load.out"), dir.File("load.err")));
  // Running: both system sessions and some actions are open.
  ASSERT_TRUE(WaitUntil([&] { return Num(server.UserStats("digiscope"), "current") >= 3; }));
  const auto signalled = SteadyClock::now();
  ASSERT_TRUE(load.Signal(SIGTERM));
  const auto status = load.Wait(milliseconds(10000));
  ASSERT_TRUE(status.has_value());
  EXPECT_LT(SteadyClock::now() - signalled, milliseconds(5000));
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFile(dir.File("load.err"));
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_GT(Num(summary, "actions"), 0);
  EXPECT_TRUE(summary.at("errors").as_object().empty()) << boost::json::serialize(summary);
  EXPECT_EQ(Num(server.UserStats("digiscope"), "current"), 0);
}

TEST(Load, OneInstanceCanBeKilledAlone) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "32"});
  ASSERT_TRUE(server.ok());
  ChildProcess load;
  ASSERT_TRUE(
      load.Start(LoadArgs(server, {"--instances", "2", "--threads", "2", "--duration", "60"}),
                 dir.File("load.out"), dir.File("load.err")));
  // The parent names each instance's pid on stderr.
  pid_t victim = -1;
  ASSERT_TRUE(WaitUntil([&] {
    const std::string err = ReadFile(dir.File("load.err"));
    const auto at = err.find("instance 0 pid ");
    if (at == std::string::npos || err.find('\n', at) == std::string::npos) return false;
    victim = static_cast<pid_t>(std::stol(err.substr(at + 15)));
    return true;
  }));
  ASSERT_TRUE(WaitUntil([&] { return Num(server.UserStats("digiscope"), "current") >= 2; }));
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  ASSERT_TRUE(load.Signal(SIGTERM));
  const auto status = load.Wait(milliseconds(10000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1);  // not every instance reported
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_EQ(Num(summary.at("errors").as_object(), "instance_lost"), 1);
  EXPECT_TRUE(summary.at("actions_per_instance").as_array()[0].is_null());
  // The killed instance's sessions go away with its connections (no linger configured).
  EXPECT_TRUE(WaitUntil([&] { return Num(server.UserStats("digiscope"), "current") == 0; }));
}

TEST(Load, RefusesBadFlags) {
  ScratchDir dir;
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--server", "127.0.0.1:1", "--no-broker", "--hold-ms-min", "5", "--hold-ms-max", "1"},
           {"--server", "127.0.0.1:1", "--no-broker", "--hold-dist", "pareto"},
           {"--no-broker"},
           {"--server", "127.0.0.1:1"}}) {  // broker mode without --socket/--target
    std::vector<std::string> argv = {BinPath("dsb-load")};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess p;
    ASSERT_TRUE(p.Start(argv, dir.File("o"), dir.File("e")));
    const auto status = p.Wait(milliseconds(5000));
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << args.back();
  }
}

TEST(Load, ConnectErrorsAreCountedAndTheRunStillEnds) {
  ScratchDir dir;
  // Find a port nobody listens on: start a server, stop it, reuse its address.
  std::string address;
  {
    SimServerProcess server(dir, {});
    ASSERT_TRUE(server.ok());
    address = server.address();
    server.process().Signal(SIGTERM);
    ASSERT_TRUE(server.process().Wait(milliseconds(5000)).has_value());
  }
  ChildProcess load;
  ASSERT_TRUE(load.Start({BinPath("dsb-load"), "--no-broker", "--server", address, "--threads", "2",
                          "--duration", "0.3"},
                         dir.File("load.out"), dir.File("load.err")));
  const auto status = load.Wait(milliseconds(10000));
  ASSERT_TRUE(status.has_value());
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_GT(Num(summary.at("errors").as_object(), "connect"), 0);
  EXPECT_EQ(Num(summary, "actions"), 0);
  // Issue 9: a run that never reached its server is a failure, and says why.
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1);
  EXPECT_NE(ReadFile(dir.File("load.err")).find("never opened their system session"),
            std::string::npos)
      << ReadFile(dir.File("load.err"));
}

// Issue 9: numbers that mean nothing (NaN, infinity) and addresses that cannot
// be reached are refused before the run, naming the option; none of them
// reaches the JSON summary.
TEST(Load, RefusesNonFiniteNumbersAndBadAddressesNamingTheOption) {
  ScratchDir dir;
  const struct {
    std::vector<std::string> args;
    std::string named;
  } cases[] = {
      {{"--no-broker", "--server", "127.0.0.1:1", "--duration", "nan"}, "--duration"},
      {{"--no-broker", "--server", "127.0.0.1:1", "--duration", "inf"}, "--duration"},
      {{"--no-broker", "--server", "127.0.0.1:1", "--duration", "-1"}, "--duration"},
      {{"--no-broker", "--server", "127.0.0.1:1", "--hold-ms-min", "nan"}, "--hold-ms-min"},
      {{"--no-broker", "--server", "127.0.0.1:1", "--think-ms", "inf"}, "--think-ms"},
      {{"--no-broker", "--server", "127.0.0.1:1", "--backoff-ms-max", "NaN"}, "--backoff-ms-max"},
      {{"--no-broker", "--server", "127.0.0.1:99999"}, "--server"},
      {{"--no-broker", "--server", "127.0.0.1:0"}, "--server"},
      {{"--no-broker", "--server", "no-port"}, "--server"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {BinPath("dsb-load")};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    ChildProcess p;
    ASSERT_TRUE(p.Start(argv, dir.File("o"), dir.File("e")));
    const auto status = p.Wait(milliseconds(5000));
    ASSERT_TRUE(status.has_value());
    const std::string err = ReadFile(dir.File("e"));
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << c.args.back() << ": " << err;
    EXPECT_NE(err.find(c.named), std::string::npos) << c.args.back() << ": " << err;
    EXPECT_EQ(ReadFile(dir.File("o")).find("NaN"), std::string::npos);
  }
}

// Issue 9: broker mode with no broker listening exits non-zero with a message
// (and a summary that is valid JSON).
TEST(Load, NoBrokerListeningIsAFailure) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "8"});
  ASSERT_TRUE(server.ok());
  ChildProcess load;
  ASSERT_TRUE(load.Start({BinPath("dsb-load"), "--server", server.address(), "--socket",
                          dir.File("no-broker.sock"), "--target", "exch01", "--duration", "0.3"},
                         dir.File("load.out"), dir.File("load.err")));
  const auto status = load.Wait(milliseconds(20000));
  ASSERT_TRUE(status.has_value());
  const std::string err = ReadFile(dir.File("load.err"));
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << err;
  EXPECT_NE(err.find("cannot register with the broker"), std::string::npos) << err;
  EXPECT_NE(err.find("instance(s) failed"), std::string::npos) << err;
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_EQ(Num(summary.at("errors").as_object(), "instance_exit_3"), 1)
      << boost::json::serialize(summary);
}

}  // namespace
}  // namespace dsb::tools_test
