// Files for a cluster of brokers on loopback, for tests: one key, one cluster
// file, one broker file per broker. The brokers are started by the caller
// (BrokerProcess), so a test keeps full control over when each runs.
#ifndef DSB_TESTS_SUPPORT_TEST_CLUSTER_H_
#define DSB_TESTS_SUPPORT_TEST_CLUSTER_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/ports.h"

namespace dsb::testing {

struct TestClusterSpec {
  int brokers = 3;            // ws1..wsN; ws1 coordinates (unless ledger_keys says otherwise)
  // The ledger's keys under [cluster]; empty: the embedded coordinator ws1. For etcd:
  // "ledger = \"etcd\"\netcd_endpoints = [...]\netcd_prefix = \"/x/\"\n".
  std::string ledger_keys;
  std::string stem;           // unique per test: shm_prefix is <stem><id>
  std::string cluster_keys = "term = \"1s\"\ndrain = \"1s\"\n";  // under [cluster]
  std::string broker_keys;    // added to every [[brokers]] entry ("system_slots = 1\n")
  std::string targets_toml;   // the [[targets]] tables
  std::string broker_extra = "adopt_grace = \"2s\"\n";  // added to every [broker] table
};

struct TestClusterFiles {
  std::vector<std::filesystem::path> configs;  // ws1.toml ...
  std::vector<std::filesystem::path> sockets;
  std::vector<std::string> ids;
  // The brokers' cluster ports, held until these files are dropped (each broker binds its
  // own with SO_REUSEADDR meanwhile): no other test takes one between writing and binding.
  std::vector<PortReservation> ports;
  // The segment of `target` on broker i (for BrokerProcess' clean-up list).
  std::string Segment(const TestClusterSpec& spec, std::size_t i,
                      const std::string& target) const {
    return "dsb-" + spec.stem + ids.at(i) + "-" + target;
  }
};

// Writes cluster.key (mode 0600), cluster.toml and wsI.toml into `dir`.
TestClusterFiles WriteTestCluster(const std::filesystem::path& dir, const TestClusterSpec& spec);

// TestClusterSpec::ledger_keys for the ledger in etcd: the members at `endpoints`
// (EtcdCluster::Endpoints()), keys under `prefix` ("/dsb/<stem>/").
std::string EtcdLedgerKeys(const std::vector<std::string>& endpoints, const std::string& prefix);

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_TEST_CLUSTER_H_
