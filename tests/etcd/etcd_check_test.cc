// What `dsb-broker --check` asks etcd (broker/etcd/etcd_check.h): CheckEtcd
// against real members (healthy, one endpoint refused, none answering, TLS,
// an unreadable TLS file), and the real dsb-broker --check on an etcd
// cluster file.
#include "broker/etcd/etcd_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "broker/config/cluster_config.h"
#include "tests/support/broker_process.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/ports.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"

namespace dsb::etcd {
namespace {

namespace fs = std::filesystem;
using dsb::testing::EtcdCluster;
using ::testing::HasSubstr;

config::ClusterConfig EtcdConfig(const std::vector<std::string>& endpoints) {
  config::ClusterConfig c;
  c.file_name = "cluster.toml";
  c.ledger = config::LedgerKind::kEtcd;
  c.etcd_endpoints = endpoints;
  c.etcd_timeout = std::chrono::seconds(1);
  return c;
}

TEST(EtcdCheck, NamesTheEndpointThatAnsweredAndEachMember) {
  DSB_SKIP_WITHOUT_ETCD();
  EtcdCluster cluster;
  ASSERT_TRUE(cluster.Start(1)) << cluster.error();
  dsb::testing::PortReservation refused;  // bound, not listening
  ASSERT_TRUE(refused.ok());
  const std::string dead = "http://" + refused.address();
  auto r = CheckEtcd(EtcdConfig({dead, cluster.Endpoint(0)}));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_THAT(*r,
              HasSubstr("etcd: healthy: a linearizable read answered by " + cluster.Endpoint(0)));
  EXPECT_THAT(*r, HasSubstr(cluster.Endpoint(0) + ": member "));
  EXPECT_THAT(*r, HasSubstr("the leader"));
  EXPECT_THAT(*r, HasSubstr("\n  " + dead + ": cannot connect: "));
  std::printf("%s\n", r->c_str());
}

TEST(EtcdCheck, NoEndpointAnsweringNamesEveryEndpointAndWhy) {
  dsb::testing::PortReservation a, b;
  ASSERT_TRUE(a.ok() && b.ok());
  auto r = CheckEtcd(EtcdConfig({"http://" + a.address(), "http://" + b.address()}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kBrokerUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("etcd: not healthy"));
  EXPECT_THAT(r.status().message(), HasSubstr("http://" + a.address() + ": cannot connect"));
  EXPECT_THAT(r.status().message(), HasSubstr("http://" + b.address() + ": cannot connect"));
}

TEST(EtcdCheck, TlsWorksAndAnUnreadableFileIsAConfigErrorNamingIt) {
  DSB_SKIP_WITHOUT_ETCD();
  EtcdCluster cluster;
  ASSERT_TRUE(cluster.Start(1, /*tls=*/true)) << cluster.error();
  config::ClusterConfig c = EtcdConfig(cluster.Endpoints());
  const TlsFiles files = cluster.ClientTls();
  c.etcd_tls = config::EtcdTlsConfig{files.ca_file, files.cert_file, files.key_file};
  auto r = CheckEtcd(c);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_THAT(*r, HasSubstr("answered by " + cluster.Endpoint(0)));
  c.etcd_tls->key_file = cluster.dir() + "/no-such.key";
  auto bad = CheckEtcd(c);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Errc::kConfig);
  EXPECT_THAT(bad.status().message(), HasSubstr(cluster.dir() + "/no-such.key"));
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The real dsb-broker --check on a cluster file with ledger = "etcd": it
// names the etcd endpoint that answered; with etcd down it fails naming it.
TEST(EtcdCheck, DsbBrokerCheckAsksEtcd) {
  DSB_SKIP_WITHOUT_ETCD();
  EtcdCluster cluster;
  ASSERT_TRUE(cluster.Start(1)) << cluster.error();
  dsb::testing::ScratchDir dir("dsb-etcd-check");
  dsb::testing::TestClusterSpec spec;
  spec.brokers = 2;
  spec.stem = dsb::testing::UniqueName("ek").substr(0, 20);
  spec.ledger_keys = "ledger = \"etcd\"\netcd_endpoints = [\"" + cluster.Endpoint(0) +
                     "\"]\netcd_prefix = \"/dsb/check/\"\n";
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 8\n";
  spec.broker_extra = "state_dir = \"" + (dir.path() / "state").string() + "\"\n";
  const auto files = dsb::testing::WriteTestCluster(dir.path(), spec);
  const fs::path err_file = dir.path() / "check.err";
  std::string out;
  const int code = dsb::testing::BrokerProcess::RunArgsToExit(
      "--check --config '" + files.configs[0].string() + "' 2>'" + err_file.string() + "'", &out);
  const std::string err = ReadAll(err_file);
  if (err.find("is not implemented in this build") != std::string::npos) {
    GTEST_SKIP() << "ledger = \"etcd\" is still refused at start (lane link removes it): " << err;
  }
  ASSERT_EQ(code, 0) << out << err;
  EXPECT_THAT(out,
              HasSubstr("etcd: healthy: a linearizable read answered by " + cluster.Endpoint(0)));
  EXPECT_THAT(out, HasSubstr("# etcd_prefix = \"/dsb/check/\""));

  cluster.Kill(0);
  const int down = dsb::testing::BrokerProcess::RunArgsToExit(
      "--check --config '" + files.configs[0].string() + "' 2>'" + err_file.string() + "'", &out);
  const std::string err2 = ReadAll(err_file);
  EXPECT_EQ(down, 1) << out << err2;
  EXPECT_THAT(err2, HasSubstr("etcd: not healthy"));
  EXPECT_THAT(err2, HasSubstr(cluster.Endpoint(0)));
}

}  // namespace
}  // namespace dsb::etcd
