#include "tests/support/test_cluster.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <random>

namespace dsb::testing {

TestClusterFiles WriteTestCluster(const std::filesystem::path& dir, const TestClusterSpec& spec) {
  {
    std::ofstream key(dir / "cluster.key");
    std::mt19937_64 rng(std::random_device{}());
    for (int i = 0; i < 4; ++i) key << std::hex << std::setw(16) << std::setfill('0') << rng();
  }
  ::chmod((dir / "cluster.key").c_str(), 0600);
  TestClusterFiles files;
  {
    std::ofstream cluster(dir / "cluster.toml");
    cluster << "[cluster]\n"
            << (spec.ledger_keys.empty() ? "coordinator = \"ws1\"\n" : spec.ledger_keys)
            << spec.cluster_keys << "\n";
    for (int i = 1; i <= spec.brokers; ++i) {
      files.ports.emplace_back();
      cluster << "[[brokers]]\nid = \"ws" << i << "\"\naddress = \""
              << files.ports.back().address() << "\"\n"
              << spec.broker_keys << "\n";
    }
    cluster << spec.targets_toml;
  }
  for (int i = 1; i <= spec.brokers; ++i) {
    const std::string id = "ws" + std::to_string(i);
    const std::filesystem::path socket = dir / (id + ".sock");
    std::ofstream(dir / (id + ".toml"))
        << "[broker]\nid = \"" << id << "\"\nsocket = \"" << socket.string()
        << "\"\nshm_prefix = \"" << spec.stem << id
        << "\"\ncluster = \"cluster.toml\"\nkey_file = \"cluster.key\"\n"
        << (spec.broker_extra.find("state_dir") == std::string::npos
                ? "state_dir = \"" + (dir / ("state-" + id)).string() + "\"\n"
                : std::string())
        << spec.broker_extra;
    files.configs.push_back(dir / (id + ".toml"));
    files.sockets.push_back(socket);
    files.ids.push_back(id);
  }
  return files;
}

std::string EtcdLedgerKeys(const std::vector<std::string>& endpoints, const std::string& prefix) {
  std::string list;
  for (const std::string& e : endpoints) list += (list.empty() ? "\"" : ", \"") + e + "\"";
  return "ledger = \"etcd\"\netcd_endpoints = [" + list + "]\netcd_prefix = \"" + prefix +
         "\"\n";
}

}  // namespace dsb::testing
