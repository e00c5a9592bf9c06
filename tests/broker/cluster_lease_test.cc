// The cluster file's lease configs (broker/cluster_lease.h): whatever the parser accepts,
// lease::Ledger::Validate and lease::LeaseAgent::Validate accept; what they would refuse,
// the parser refuses naming file, key and reason (so `dsb-broker --check` catches it).
#include "broker/cluster_lease.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace dsb::broker {
namespace {

using ::testing::HasSubstr;

std::string Cluster(const std::string& cluster_keys, const std::string& ws2_keys = "") {
  return "[cluster]\ncoordinator = \"ws1\"\n" + cluster_keys +
         "\n[[brokers]]\nid = \"ws1\"\naddress = \"127.0.0.1:7401\"\n"
         "\n[[brokers]]\nid = \"ws2\"\naddress = \"127.0.0.1:7402\"\nsystem_slots = 2\nfloor = 3\n" +
         ws2_keys + "\n[[targets]]\nname = \"exch01\"\nlimit = 32\nreserve = 2\n"
                    "\n[[targets]]\nname = \"pg\"\nlimit = 7\n";
}

void ExpectLeaseCoreAccepts(const config::ClusterConfig& c) {
  const lease::LedgerConfig lc = LedgerConfigOf(c);
  EXPECT_TRUE(lease::Ledger::Validate(lc).ok()) << lease::Ledger::Validate(lc).message();
  for (const config::ClusterBroker& b : c.brokers) {
    const lease::AgentConfig ac = AgentConfigOf(c, b, 1);
    EXPECT_TRUE(lease::LeaseAgent::Validate(ac).ok()) << lease::LeaseAgent::Validate(ac).message();
  }
}

TEST(ClusterLease, ConvertsPoolsWeightsAndTiming) {
  auto c = config::ParseClusterConfig(
      Cluster("term = \"3s\"\ndrain = \"2s\"\neps = 0.01\n", "weight = 2.5\n"), "cluster.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  const lease::LedgerConfig lc = LedgerConfigOf(*c);
  ASSERT_EQ(lc.targets.size(), 2u);
  EXPECT_EQ(lc.targets[0].pool, 32u - 2u - (1u + 2u + 3u));
  EXPECT_EQ(lc.targets[0].limit, 32u);
  EXPECT_EQ(lc.targets[1].pool, 7u - 6u);
  ASSERT_EQ(lc.brokers.size(), 2u);
  EXPECT_EQ(lc.brokers[0].weight, 100u);
  EXPECT_EQ(lc.brokers[1].weight, 250u);
  EXPECT_EQ(lc.term, std::chrono::seconds(3));
  EXPECT_EQ(lc.drain, std::chrono::seconds(2));
  EXPECT_DOUBLE_EQ(lc.eps, 0.01);

  const lease::AgentConfig ac = AgentConfigOf(*c, c->brokers[1], 42);
  EXPECT_EQ(ac.broker_id, "ws2");
  EXPECT_EQ(ac.epoch, 42u);
  ASSERT_EQ(ac.targets.size(), 2u);
  EXPECT_EQ(ac.targets[1].name, "pg");
  EXPECT_EQ(ac.targets[1].system_slots, 2u);
  EXPECT_EQ(ac.targets[1].floor, 3u);
  EXPECT_EQ(ac.term, std::chrono::seconds(3));
  ExpectLeaseCoreAccepts(*c);
}

// Each accepted extreme of every key the lease core checks.
TEST(ClusterLease, EveryAcceptedExtremeIsAcceptedByTheLeaseCore) {
  const struct {
    const char* what;
    std::string text;
  } cases[] = {
      {"defaults", Cluster("")},
      {"shortest term and drain", Cluster("term = \"100ms\"\ndrain = \"1ms\"\n")},
      {"longest term and drain", Cluster("term = \"1h\"\ndrain = \"24h\"\n")},
      {"eps zero", Cluster("eps = 0.0\n")},
      {"eps just below 0.1", Cluster("eps = 0.0999999\n")},
      {"smallest weight", Cluster("", "weight = 0.01\n")},
      {"largest weight", Cluster("", "weight = 655.35\n")},
      {"pool zero", Cluster("").replace(Cluster("").find("limit = 7"), 9, "limit = 6")},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto parsed = config::ParseClusterConfig(c.text, "cluster.toml");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    ExpectLeaseCoreAccepts(*parsed);
  }
}

// What the lease core would refuse (or silently change) is refused with file and key.
TEST(ClusterLease, WhatTheLeaseCoreRefusesTheParserRefusesNamingFileAndKey) {
  const struct {
    const char* what;
    std::string text;
    const char* expected;
  } cases[] = {
      {"drain zero", Cluster("drain = \"0s\"\n"),
       "cluster.toml: cluster.drain: must be between 1ms and 24h, got \"0s\""},
      {"weight the ledger would round to 0", Cluster("", "weight = 0.001\n"),
       "cluster.toml: brokers[1].weight: must be between 0.01 and 655.35"},
      {"weight the ledger would clamp", Cluster("", "weight = 1000\n"),
       "cluster.toml: brokers[1].weight: must be between 0.01 and 655.35"},
      {"eps 0.1", Cluster("eps = 0.1\n"), "cluster.toml: cluster.eps:"},
      {"term zero", Cluster("term = \"0s\"\n"), "cluster.toml: cluster.term:"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto parsed = config::ParseClusterConfig(c.text, "cluster.toml");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), Errc::kConfig);
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.expected));
  }
}

}  // namespace
}  // namespace dsb::broker
