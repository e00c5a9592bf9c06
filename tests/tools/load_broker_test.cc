// dsb-load in broker mode against a real dsb-broker and dsb-simserver: the seed's failing
// workload (2 instances x 32 threads, cap 32) runs with zero refusals when every session first
// takes a slot from the broker.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/tools/sim_server_process.h"

namespace dsb::tools_test {
namespace {

boost::json::object Summary(const std::string& stdout_path) {
  std::string out = ReadFile(stdout_path);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const auto nl = out.rfind('\n');
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(nl == std::string::npos ? out : out.substr(nl + 1), ec);
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "no JSON summary in: " << out;
    return {};
  }
  return v.as_object();
}

TEST(LoadBroker, TwoInstancesOf32ThreadsThroughTheBrokerAreNeverRefused) {
  ScratchDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string prefix = "tl" + std::to_string(::getpid());
  dsb::testing::BrokerProcess broker(dir.File(""), prefix,
                                     {dsb::testing::BrokerTarget{"exch01", 32}});
  ASSERT_TRUE(broker.Start()) << broker.log();
  SimServerProcess server(dir, {"--limit", "32"});
  ASSERT_TRUE(server.ok());

  ChildProcess load;
  ASSERT_TRUE(load.Start({BinPath("dsb-load"), "--server", server.address(), "--socket",
                          broker.socket().string(), "--target", "exch01", "--instances", "2",
                          "--threads", "32", "--duration", "2", "--seed", "11"},
                         dir.File("load.out"), dir.File("load.err")));
  const auto status = load.Wait(milliseconds(30000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFile(dir.File("load.err"));
  const boost::json::object summary = Summary(dir.File("load.out"));
  EXPECT_EQ(summary.at("mode").as_string(), "broker");
  EXPECT_EQ(Num(summary, "refusals"), 0);
  EXPECT_GT(Num(summary, "actions"), 0);
  EXPECT_TRUE(summary.at("errors").as_object().empty()) << boost::json::serialize(summary);
  const auto& waits = summary.at("acquire_wait_ms").as_object();
  EXPECT_GT(Num(waits, "count"), 0);
  EXPECT_LE(Num(waits, "p50"), Num(waits, "p99"));
  EXPECT_LE(Num(waits, "p99"), Num(waits, "max"));

  const boost::json::object s = server.UserStats("digiscope");
  EXPECT_EQ(Num(s, "refused"), 0);
  EXPECT_LE(Num(s, "peak"), 32);
  EXPECT_GE(Num(s, "peak"), 30);  // the broker keeps the cap busy
  EXPECT_EQ(Num(s, "opened"), Num(summary, "opens"));
  broker.Stop();
}

}  // namespace
}  // namespace dsb::tools_test
