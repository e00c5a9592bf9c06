#include "broker/cluster_lease.h"

#include <algorithm>
#include <cmath>

namespace dsb::broker {

lease::LedgerConfig LedgerConfigOf(const config::ClusterConfig& cluster) {
  lease::LedgerConfig lc;
  lc.term = cluster.term;
  lc.drain = cluster.drain;
  lc.eps = cluster.eps;
  lc.generation = cluster.generation;
  lc.file_hash = cluster.hash;
  for (const auto& t : cluster.targets) {
    lc.targets.push_back(lease::LedgerTarget{t.name, static_cast<std::uint32_t>(cluster.Pool(t)),
                                             static_cast<std::uint32_t>(t.limit)});
  }
  for (const auto& b : cluster.brokers) {
    // Weights are ratios; the ledger takes integers 1..65535 (two decimals kept). The
    // parser accepts only config::kMinWeight..kMaxWeight, so the clamp never changes one.
    const long w = std::lround(b.weight * 100.0);
    lease::LedgerBroker lb{b.id, static_cast<std::uint32_t>(std::clamp(w, 1L, 65535L))};
    // R1/R2: the allowance this file gives the broker, the same on every target.
    lb.system_slots.assign(cluster.targets.size(), static_cast<std::uint32_t>(b.system_slots));
    lb.floors.assign(cluster.targets.size(), static_cast<std::uint32_t>(b.floor));
    lc.brokers.push_back(std::move(lb));
  }
  return lc;
}

lease::AgentConfig AgentConfigOf(const config::ClusterConfig& cluster,
                                 const config::ClusterBroker& self, std::uint64_t epoch) {
  lease::AgentConfig ac;
  ac.broker_id = self.id;
  ac.epoch = epoch;
  ac.generation = cluster.generation;
  ac.file_hash = cluster.hash;
  ac.term = cluster.term;
  ac.eps = cluster.eps;
  for (const auto& t : cluster.targets) {
    ac.targets.push_back(lease::AgentTarget{t.name, static_cast<std::uint32_t>(self.system_slots),
                                            static_cast<std::uint32_t>(self.floor)});
  }
  return ac;
}

}  // namespace dsb::broker
