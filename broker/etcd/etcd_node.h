// EtcdNode: the cluster side of one broker whose cluster file says
// `ledger = "etcd"` (ClusterNode dispatches every call to it in that mode).
//
//  - the lease agent (ClusterAgent, the same as with the embedded
//    coordinator): renews every D/3, applies grants on this broker's own clock
//    (B1), sets each target's capacity;
//  - the transport of its renews, goodbye and admin operations is etcd
//    (EtcdLedger): there is no coordinator broker, no hello (R3 is the
//    stored config's generation) and no cluster listener. Every broker answers
//    `dsbctl leases`, `status`, `set-limit`, `revoke`, `drain`, `undrain` from
//    and into etcd, so they work through ANY broker.
//
// Limits (DESIGN section 8) are EtcdLimits' (etcd_limits.h, `// lane limits`
// lines in etcd_node.cc): a limit keeper elected in etcd runs discovery and
// limit_command; refusal reports, set-limit and the status's limits go
// through etcd on every broker.
//
// Thread rule: created and used on the broker's single-threaded io_context.
#ifndef DSB_BROKER_ETCD_ETCD_NODE_H_
#define DSB_BROKER_ETCD_ETCD_NODE_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "broker/cluster_agent.h"
#include "broker/config/broker_config.h"
#include "common/status.h"

namespace dsb::broker {
class LimitKeeper;
}

namespace dsb::etcd {

class EtcdClient;
class EtcdLedger;
class EtcdLimits;

class EtcdNode {
 public:
  // Takes the epoch (R0), builds the agent and the etcd client from the
  // cluster file (etcd_endpoints, etcd_prefix, [etcd_tls]). Nothing is sent
  // yet. Errors: kConfig naming the file or value (state_dir missing, an
  // endpoint or TLS file the client refuses).
  static Result<std::unique_ptr<EtcdNode>> Create(boost::asio::io_context& io,
                                                  const config::BrokerConfig& config,
                                                  broker::ClusterHooks hooks);
  ~EtcdNode();

  // Starts the agent (its first renew makes this instance's etcd lease and
  // live key) and the watch. Never fails today: an unreachable etcd is
  // retried and logged, the agent then runs on its floor.
  Status Start();
  // R5: admits nothing new and writes a goodbye with what is held (if this
  // instance was accepted), then ends every etcd call. The etcd lease is
  // never revoked: it expires by itself.
  void Stop();

  // The ClusterNode calls (cluster.h), in etcd mode.
  std::optional<std::string> NotAcceptedReason() const;
  bool MayRegister(std::size_t target, std::uint32_t registered) const;
  boost::json::object AgentView() const;
  boost::asio::awaitable<boost::json::object> Leases();
  boost::asio::awaitable<boost::json::object> Limits();
  boost::asio::awaitable<boost::json::object> SetLimit(std::size_t target, std::uint32_t limit,
                                                       std::string who);
  boost::asio::awaitable<boost::json::object> Steer(boost::json::object request, std::string who);
  // R3 has no hello in etcd mode: refused with a message saying so.
  boost::asio::awaitable<boost::json::object> ConfirmStopped(std::string broker);
  void ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who);
  const broker::LimitKeeper* CoordinatorLimits() const;

  // Names the ledger in log lines and replies.
  static constexpr const char* kLedgerName = "etcd ledger";

 private:
  EtcdNode(boost::asio::io_context& io, const config::BrokerConfig& config);

  boost::asio::io_context& io_;
  const config::BrokerConfig cfg_;
  std::unique_ptr<broker::ClusterAgent> side_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<EtcdLedger> ledger_;
  std::unique_ptr<EtcdLimits> limits_;  // lane limits: the limit keeper through etcd
  bool stopping_ = false;
  std::uint64_t refusals_dropped_ = 0;
};

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_ETCD_NODE_H_
