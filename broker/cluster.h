// ClusterNode: the cluster side of one broker (DESIGN section 7).
//
//  - the lease agent (every broker): renews with the coordinator every D/3 over
//    an authenticated wire::Channel, applies grants (B1, B1a, B2) and sets each
//    target's action capacity to floor + lease through the `apply` hook;
//  - the coordinator role (the broker named by cluster.coordinator): accepts
//    brokers' channels, runs the Ledger (C1-C3) and answers renews and admin
//    queries (`dsbctl leases`).
//
// The coordinator's own agent talks to it over loopback TCP like any other
// broker: one code path, no special case.
//
// Thread rule: created and used on the broker's single-threaded io_context.
#ifndef DSB_BROKER_CLUSTER_H_
#define DSB_BROKER_CLUSTER_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <memory>
#include <vector>

#include "broker/cluster_agent.h"
#include "broker/config/broker_config.h"
#include "broker/lease/agent.h"
#include "common/status.h"

namespace dsb::etcd {
class EtcdNode;
}

namespace dsb::broker {

class LimitKeeper;

class ClusterNode {
 public:
  // What the broker gives its cluster side (cluster_agent.h).
  using Hooks = ClusterHooks;

  // Loads the cluster key and validates the agent and ledger configs. With
  // `ledger = "etcd"` in the cluster file every call below goes to an
  // etcd::EtcdNode instead (broker/etcd/etcd_node.h: no coordinator, no
  // listener; renews and admin operations by transaction in etcd).
  // Errors: kConfig naming the key file or the bad value.
  static Result<std::unique_ptr<ClusterNode>> Create(boost::asio::io_context& io,
                                                     const config::BrokerConfig& config,
                                                     Hooks hooks);
  ~ClusterNode();

  // Binds the listener on this broker's address (the coordinator's ledger, or
  // for any broker the answer to a coordinator's hello, R3) and starts the
  // agent. Errors: kBrokerUnavailable if the listener cannot bind.
  Status Start();
  // R5: admits nothing new, sends a goodbye with what is held (if this
  // instance was accepted and the coordinator is connected), then closes.
  void Stop();

  // R1: nullopt once the coordinator accepted this instance; otherwise why
  // not yet (or why it was refused), for the error a new client gets.
  std::optional<std::string> NotAcceptedReason() const;

  // `dsbctl leases`: the coordinator's ledger, asked over the wire if it is
  // another broker. Also carries this broker's own agent view.
  boost::asio::awaitable<boost::json::object> Leases();
  // R3: {"op":"confirm_stopped"} to the coordinator (asked over the wire when
  // it is another broker): `broker` runs no coordinator of an older generation.
  boost::asio::awaitable<boost::json::object> ConfirmStopped(std::string broker);
  // This broker's lease view (no network).
  boost::json::object AgentView() const;
  // The coordinator's limit keeper, indexed as the cluster file's targets
  // (config().cluster->targets), for the metric dsb_limit_changes_total;
  // null on a broker that is not the coordinator. Valid as long as this node.
  const LimitKeeper* CoordinatorLimits() const;
  // B1 registration admission for a target.
  bool MayRegister(std::size_t target, std::uint32_t registered) const;

  // Limit discovery (DESIGN section 8): a client of this broker was refused
  // for the server's limit while this broker held `held` sessions of target
  // `target` (system_slots + action slots held, cooling and quarantined
  // included, the refused attempt not counted). Sent to the coordinator as a
  // RefusalReport; lost like any message if the channel is down (logged).
  void ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who);
  // The effective limits ({"ok", "targets": [{"target", "limit",
  // "limit_source", ...}]}), from the coordinator (asked over the wire when it
  // is another broker); {"ok": false, "message"} when it cannot be reached.
  boost::asio::awaitable<boost::json::object> Limits();
  // An operator's limit for target `target`, applied by the coordinator.
  boost::asio::awaitable<boost::json::object> SetLimit(std::size_t target, std::uint32_t limit,
                                                       std::string who);
  // revoke, drain or undrain (`request`: local_protocol::RevokeRequest or
  // DrainRequest), applied by the coordinator (cluster_admin.h), logged there
  // with `who` and this broker. The reply names the broker's mode per target,
  // or the refusal (unknown broker or target, forced revoke without
  // confirm_dead, coordinator unreachable).
  boost::asio::awaitable<boost::json::object> Steer(boost::json::object request, std::string who);

  struct Impl;

 private:
  explicit ClusterNode(std::unique_ptr<Impl> impl);
  explicit ClusterNode(std::unique_ptr<etcd::EtcdNode> etcd);
  std::unique_ptr<Impl> impl_;          // the embedded coordinator's mode
  std::unique_ptr<etcd::EtcdNode> etcd_;  // or the etcd ledger's
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_CLUSTER_H_
