// An etcd member's own counters (its Prometheus /metrics page), for
// dsb-bench-etcd's writes-per-second rows. The members themselves are started
// by the test harness tests/support/etcd_cluster.h.
//
// Thread rule: none; the call blocks (a few ms on loopback).
#ifndef DSB_TOOLS_BENCH_ETCD_ETCD_METRICS_H_
#define DSB_TOOLS_BENCH_ETCD_ETCD_METRICS_H_

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsb::bench {

// GET <endpoint>/metrics ("http://127.0.0.1:port"; plain http only) and sum
// the samples of each metric named in `names` (labels ignored; a name with
// no sample reads 0). Failure: kInvalidArgument for an endpoint that is not
// http://host:port; kBrokerUnavailable naming the endpoint when it cannot be
// read within `timeout`; kProtocol for a non-2xx answer.
Result<std::map<std::string, double>> EtcdMetrics(const std::string& endpoint,
                                                   const std::vector<std::string>& names,
                                                   std::chrono::milliseconds timeout);

}  // namespace dsb::bench

#endif  // DSB_TOOLS_BENCH_ETCD_ETCD_METRICS_H_
