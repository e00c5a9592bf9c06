// ClusterAgent: the lease agent side of one broker in a cluster (DESIGN
// section 7: B1, B1a, B2 on the broker, R0 epoch and instance, R1 acceptance
// kept in state_dir, R5 goodbye), whatever keeps the ledger: the embedded
// coordinator (broker/cluster.cc, over a wire::Channel) or etcd
// (broker/etcd/etcd_node.cc). It drives lease::LeaseAgent on this broker's
// own monotonic clock, sets every target's capacity through the hooks, logs
// the ledger's word on this instance once per change and keeps the
// acceptance in state_dir. The transport is the caller's: Run() hands each
// request to `send`; the caller passes back grants (OnGrant) and "renew now"
// hints (OnRevokeNotice).
//
// Thread rule: created and used on the broker's single-threaded io_context.
#ifndef DSB_BROKER_CLUSTER_AGENT_H_
#define DSB_BROKER_CLUSTER_AGENT_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/config/broker_config.h"
#include "broker/lease/agent.h"
#include "common/status.h"

namespace dsb::broker {

// What the broker gives its cluster side (ClusterNode::Hooks).
struct ClusterHooks {
  // Usage of every target (config order), read at one instant (B2).
  std::function<std::vector<lease::TargetUsage>()> usage;
  // Sets a target's action capacity (config order).
  std::function<void(std::size_t target, const lease::TargetCapacity&)> apply;
  // R5: admit nothing new from now on (a clean stop; capacity = what is held).
  std::function<void()> freeze;
  // R1: per target (config order), the lease deadline a previous broker left
  // in an adopted segment (adopted action slots are kept until then while
  // this instance waits for its acceptance). Missing entries: none.
  std::vector<std::optional<std::chrono::steady_clock::time_point>> inherited;
};

class ClusterAgent {
 public:
  // R0: takes the next epoch from state_dir (written and synced first) and a
  // fresh random instance id; builds the agent from the cluster file
  // (cluster_lease.h AgentConfigOf). Errors: kConfig when state_dir is
  // missing or its epoch file is bad, or the agent config is refused (named
  // with the cluster file); kInternal when the epoch cannot be written.
  static Result<std::unique_ptr<ClusterAgent>> Create(boost::asio::io_context& io,
                                                      const config::BrokerConfig& config,
                                                      ClusterHooks hooks);
  ~ClusterAgent();

  // Ticks the agent until Stop(): at every deadline, at least every D/24
  // (early renews when demand changes) and after each Poke(). Every request
  // to send (new or resent) goes to `send` right after the agent marked it
  // sent (so t_sent precedes whatever the transport does with it).
  boost::asio::awaitable<void> Run(std::function<void(const lease::RenewRequest&)> send);
  // Tick now (a new channel, a grant, a hint).
  void Poke();
  void Stop();

  // Applies `grant` (B1a decides), logs the ledger's verdict on this
  // instance when it changed ("<ledger>: this broker (epoch e) is accepted";
  // `ledger` names who keeps it: "coordinator ws1", "etcd ledger"), keeps an
  // acceptance in state_dir (naming `ledger_id`: the coordinator's broker id,
  // or "etcd") and erases it when removed (R1, R2).
  void OnGrant(const lease::Grant& grant, const std::string& ledger,
               const std::string& ledger_id);
  // "Renew now" (C2: revoked, drained, undrained, a limit changed).
  void OnRevokeNotice();
  // The ledger may have given away what this instance was owed (etcd mode:
  // a forced revoke): the applied lease becomes 0 at once and a renew is sent
  // (lease::LeaseAgent::DropLease; the caller logged why).
  void DropLease();

  // R5: if this instance was accepted, stops admitting anything new (the
  // freeze hook) and returns the goodbye with what is held per target;
  // nullopt otherwise (nothing to hand over).
  std::optional<lease::Goodbye> Freeze();

  // R1: nullopt once accepted; otherwise why not (for a new client's error).
  std::optional<std::string> NotAcceptedReason(const std::string& ledger) const;
  bool MayRegister(std::size_t target, std::uint32_t registered) const {
    return agent_->MayAdmitRegistration(target, registered);
  }
  // This broker's lease view (`dsbctl status`, "lease"): the caller adds
  // "coordinator" and "connected".
  boost::json::object View() const;

  lease::LeaseAgent& agent() { return *agent_; }
  const lease::LeaseAgent& agent() const { return *agent_; }

 private:
  ClusterAgent(boost::asio::io_context& io, const config::BrokerConfig& config,
               ClusterHooks hooks);
  void Apply(const lease::AgentStep& step);

  const config::BrokerConfig cfg_;
  ClusterHooks hooks_;
  std::unique_ptr<lease::LeaseAgent> agent_;
  boost::asio::steady_timer tick_timer_;
  std::vector<lease::TargetCapacity> capacities_;
  lease::Verdict logged_verdict_ = lease::Verdict::kPending;
  std::string logged_reason_;
  bool acceptance_written_ = false;
  bool erased_ = false;
  bool stopping_ = false;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_CLUSTER_AGENT_H_
