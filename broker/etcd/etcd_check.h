// What `dsb-broker --check` asks etcd when the cluster file says
// ledger = "etcd": the client options the cluster file gives, and whether the
// etcd cluster answers a linearizable read (it has a leader and quorum).
//
// Thread rule: none (CheckEtcd runs its own io_context to its end).
#ifndef DSB_BROKER_ETCD_ETCD_CHECK_H_
#define DSB_BROKER_ETCD_ETCD_CHECK_H_

#include <string>

#include "broker/config/cluster_config.h"
#include "broker/etcd/etcd_client.h"
#include "common/status.h"

namespace dsb::etcd {

// The client options of a cluster file: etcd_endpoints, [etcd_tls] when set,
// etcd_timeout as the call deadline.
// REQUIRES: cluster.ledger == kEtcd.
ClientOptions ClientOptionsFrom(const config::ClusterConfig& cluster);

// Asks each endpoint for its status (member id, leader, version) and then
// the cluster for a linearizable read (through the client's failover).
// Success: a report, one line per endpoint, the first naming the endpoint
// that answered the read ("etcd: healthy: a linearizable read answered by
// http://127.0.0.1:2379 in 1.2 ms").
// Failure: kConfig (a TLS file missing or unreadable, named; https on a build
// without TLS); otherwise the client's code (kBrokerUnavailable, kTimeout,
// kAuthFailed) with a message naming every endpoint and why it did not answer.
Result<std::string> CheckEtcd(const config::ClusterConfig& cluster);

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_ETCD_CHECK_H_
