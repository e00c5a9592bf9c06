// libFuzzer entry: the broker-file and cluster-file parsers on arbitrary bytes.
// Neither may crash, hang, leak or hit undefined behaviour; a refusal must be a kConfig
// Status with a message that names the file, and a success must satisfy the documented
// invariants, including that the lease core's Validate accepts the cluster file's configs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "broker/cluster_lease.h"
#include "broker/config/broker_config.h"
#include "broker/config/cluster_config.h"

namespace {

// Aborts (a finding for libFuzzer) when a documented property does not hold.
void Require(bool condition) {
  if (!condition) std::abort();
}

// A refusal names the file (this one, or the cluster file a broker file points to) and
// echoes untrusted bytes only escaped.
void CheckRefusal(const dsb::Status& status) {
  Require(status.code() == dsb::Errc::kConfig);
  const std::string message = status.message();
  Require(message.find(": ") != std::string::npos);
  for (char c : message) Require(c >= 0x20 && c < 0x7f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // Only a broker file naming a cluster file may report errors under another file's name.
  // (A quoted key may spell "cluster" with escapes, hence the backslash.)
  const bool has_cluster_key =
      text.find("cluster") != std::string_view::npos || text.find('\\') != std::string_view::npos;
  // Relative to a folder that does not exist, a cluster file named by the input fails to
  // load; an absolute one is read like any file (regular files only, at most 1 MiB).
  auto broker = dsb::config::ParseBrokerConfig(text, "fuzz-broker.toml", "/nonexistent-dsb-fuzz");
  if (broker.ok()) {
    Require(!broker->targets.empty());
    for (const auto& t : broker->targets) {
      Require(t.limit >= 1 && t.reserve >= 0 && t.reserve < t.limit && t.slots >= t.limit);
    }
  } else {
    CheckRefusal(broker.status());
    Require(broker.status().message().starts_with("fuzz-broker.toml") || has_cluster_key);
  }

  auto cluster = dsb::config::ParseClusterConfig(text, "fuzz-cluster.toml");
  if (cluster.ok()) {
    Require(!cluster->brokers.empty() && !cluster->targets.empty());
    Require(cluster->hash.size() == 64);
    for (const auto& t : cluster->targets) Require(cluster->Pool(t) >= 0);
    // Whatever the parser accepts, the lease core accepts (broker/cluster_lease.h): a
    // value it would refuse at start must be refused here, naming file and key.
    Require(dsb::lease::Ledger::Validate(dsb::broker::LedgerConfigOf(*cluster)).ok());
    for (const auto& b : cluster->brokers) {
      Require(dsb::lease::LeaseAgent::Validate(dsb::broker::AgentConfigOf(*cluster, b, 1)).ok());
    }
  } else {
    CheckRefusal(cluster.status());
    Require(cluster.status().message().starts_with("fuzz-cluster.toml"));
  }
  return 0;
}
