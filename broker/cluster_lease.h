// The lease configs a cluster file gives: the coordinator's ledger and each broker's
// agent (DESIGN.md section 7). One conversion, used by the broker (cluster.cc) and checked
// by tests and the config fuzzer.
//
// Contract: for every ClusterConfig that config::ParseClusterConfig accepts, and every
// broker it lists, lease::Ledger::Validate(LedgerConfigOf(c)) and
// lease::LeaseAgent::Validate(AgentConfigOf(c, b, epoch)) succeed. So a value the lease
// core would refuse is refused by the parser with file, key and reason, and
// `dsb-broker --check` catches it (tests/broker/cluster_lease_test.cc,
// tests/fuzz/config_parse_fuzz.cc).
#ifndef DSB_BROKER_CLUSTER_LEASE_H_
#define DSB_BROKER_CLUSTER_LEASE_H_

#include <cstdint>

#include "broker/config/cluster_config.h"
#include "broker/lease/agent.h"
#include "broker/lease/ledger.h"

namespace dsb::broker {

// The coordinator's ledger: every target's pool and limit, every broker's weight in
// hundredths (1..65535), term D, drain H, eps.
lease::LedgerConfig LedgerConfigOf(const config::ClusterConfig& cluster);

// The agent of broker `self` for this start: every target with self's system slots and
// floor, term D, eps. `epoch` must exceed every earlier epoch of this broker id.
// REQUIRES: `self` is one of cluster.brokers.
lease::AgentConfig AgentConfigOf(const config::ClusterConfig& cluster,
                                 const config::ClusterBroker& self, std::uint64_t epoch);

}  // namespace dsb::broker

#endif  // DSB_BROKER_CLUSTER_LEASE_H_
