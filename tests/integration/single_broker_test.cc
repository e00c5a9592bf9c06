// One broker, three DigiScope-like instances of 32 threads, a server capped at
// 32 sessions per user (Exchange's default): no refusal, and the server is
// kept busy near its cap. The server is the judge.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "tests/support/broker_process.h"
#include "tests/tools/process.h"
#include "tests/tools/sim_server_process.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using tools_test::ChildProcess;
using tools_test::Num;
using tools_test::ScratchDir;
using tools_test::SimServerProcess;

TEST(SingleBroker, ThreeInstancesOf32ThreadsHoldTheCapWithoutRefusals) {
  ScratchDir dir;
  testing::BrokerProcess broker(std::filesystem::path(dir.File("")).parent_path(), "sb" + std::to_string(::getpid()),
                                {testing::BrokerTarget{"exch01", 32}});
  ASSERT_TRUE(broker.Start()) << broker.log();
  SimServerProcess server(dir, {"--limit", "32"});
  ASSERT_TRUE(server.ok());
  ChildProcess load;
  ASSERT_TRUE(load.Start({tools_test::BinPath("dsb-load"), "--server", server.address(),
                          "--socket", broker.socket().string(), "--target", "exch01", "--user",
                          "svc", "--instances", "3", "--threads", "32", "--duration", "6",
                          "--hold-ms-min", "20", "--hold-ms-max", "80"},
                         dir.File("load.json"), dir.File("load.err")));
  // Warm-up: all three system sessions and the actions are in; then measure.
  ASSERT_TRUE(tools_test::WaitUntil(
      [&] { return Num(server.UserStats("svc"), "current") >= 30; }, 20s));
  {
    auto c = server.Connect();
    std::error_code ec;
    c.Call("STATS RESET", ec);
    ASSERT_FALSE(ec);
  }
  auto status = load.Wait(120s);
  ASSERT_TRUE(status.has_value());
  std::string out = tools_test::ReadFile(dir.File("load.json"));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const auto summary = boost::json::parse(out.substr(out.rfind('\n') + 1)).as_object();
  const auto s = server.UserStats("svc");
  std::printf("3 x 32 threads through one broker: actions %.0f, refusals %.0f; server peak %.0f, "
              "mean %.2f of 32 (%.1f%%)\n",
              Num(summary, "actions"), Num(summary, "refusals"), Num(s, "peak"), Num(s, "mean"),
              100.0 * Num(s, "mean") / 32.0);
  EXPECT_EQ(Num(summary, "refusals"), 0);
  EXPECT_EQ(Num(s, "refused"), 0);
  EXPECT_LE(Num(s, "peak"), 32);
  EXPECT_GE(Num(s, "mean"), 0.9 * 32) << "the server was not kept near its cap";
}

}  // namespace
}  // namespace dsb
