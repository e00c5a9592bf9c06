#include "broker/etcd/etcd_node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/json.hpp>

#include "broker/cluster_admin.h"
#include "broker/cluster_lease.h"
#include "broker/etcd/etcd_check.h"
#include "broker/etcd/etcd_client.h"
#include "broker/etcd/etcd_ledger.h"
#include "broker/etcd/etcd_limits.h"
#include "common/escape.h"
#include "common/limited_log.h"
#include "common/local_protocol.h"

namespace dsb::etcd {

namespace asio = boost::asio;
namespace json = boost::json;
namespace lp = local_protocol;
using asio::awaitable;

namespace {

json::object Failed(const Status& s, const std::string& what) {
  return lp::ErrorReply(s.code(), what + ": " + s.message());
}

// The view of broker `id` in every target of `snap` (for a steer's reply).
json::array BrokerRows(const lease::LedgerSnapshot& snap, const std::string& id) {
  json::array rows;
  for (const auto& t : snap.targets) {
    for (const auto& b : t.brokers) {
      if (b.broker_id != id) continue;
      rows.push_back(json::object{{"target", t.target},
                                  {"mode", lease::BrokerModeName(b.mode)},
                                  {"owed", b.owed},
                                  {"granted", b.granted}});
    }
  }
  return rows;
}

}  // namespace

EtcdNode::EtcdNode(asio::io_context& io, const config::BrokerConfig& config)
    : io_(io), cfg_(config) {}

EtcdNode::~EtcdNode() = default;

Result<std::unique_ptr<EtcdNode>> EtcdNode::Create(asio::io_context& io,
                                                   const config::BrokerConfig& config,
                                                   broker::ClusterHooks hooks) {
  const config::ClusterConfig& cluster = *config.cluster;
  std::unique_ptr<EtcdNode> node(new EtcdNode(io, config));
  lease::LedgerConfig mine = broker::LedgerConfigOf(cluster);
  if (Status s = lease::Ledger::Validate(mine); !s.ok()) {
    return Status{s.code(), cluster.file_name + ": " + s.message()};
  }
  auto side = broker::ClusterAgent::Create(io, config, std::move(hooks));
  if (!side.ok()) return side.status();
  node->side_ = std::move(side).value();

  ClientOptions options = ClientOptionsFrom(cluster);
  // One call is bounded by the file's etcd_timeout, and by D/6 (at least
  // 100 ms) so that a renew, bounded by D/3, has room for a redo.
  options.call_timeout = std::min(
      options.call_timeout,
      std::max(std::chrono::duration_cast<std::chrono::milliseconds>(cluster.term / 6),
               std::chrono::milliseconds(100)));
  auto client = EtcdClient::Create(io.get_executor(), std::move(options));
  if (!client.ok()) {
    return Status{client.status().code(), cluster.file_name + ": " + client.status().message()};
  }
  node->client_ = std::move(client).value();

  EtcdLedgerOptions lo;
  lo.prefix = cluster.etcd_prefix;
  lo.mine = std::move(mine);
  const lease::LeaseAgent& agent = node->side_->agent();
  lo.self = lease::LiveInstance{config.id, agent.epoch(), agent.instance()};
  boost::system::error_code ec;
  const std::string host = asio::ip::host_name(ec);
  lo.live_value = json::serialize(json::object{{"v", 1}, {"broker", config.id},
                                               {"host", ec ? std::string("?") : host}});
  lo.renew_bound = cluster.term / 3;
  EtcdNode* raw = node.get();
  node->ledger_ = std::make_unique<EtcdLedger>(
      io.get_executor(), *node->client_, std::move(lo),
      EtcdLedger::Callbacks{
          [raw](const lease::Grant& grant) {
            if (!raw->stopping_) raw->side_->OnGrant(grant, kLedgerName, "etcd");
          },
          [raw] {
            // C2: revoked, drained, undrained or a limit changed in etcd:
            // renew now rather than at the next planned renew.
            if (raw->stopping_) return;
            spdlog::info("etcd ledger: the watch saw a change for this broker (revoke, drain, "
                         "undrain, limit or gate): renewing now, before the planned renew");
            raw->side_->OnRevokeNotice();
          },
          [raw](const std::string&) {
            // Review items 3, 6 (logged by the ledger): a forced revoke.
            raw->side_->DropLease();
          }});
  // lane limits: the limit keeper elected in etcd, refusal reports into etcd.
  node->limits_ = std::make_unique<EtcdLimits>(
      io, *node->client_,
      EtcdLimitsOptions{cluster.etcd_prefix, broker::LedgerConfigOf(cluster),
                        lease::LiveInstance{config.id, agent.epoch(), agent.instance()}, cluster});
  spdlog::info("cluster ledger in etcd at {} under prefix {} (no coordinator broker; renews "
               "by compare-and-swap, D = {} ms)",
               [&] {
                 std::string all;
                 for (const auto& e : cluster.etcd_endpoints) all += (all.empty() ? "" : ", ") + e;
                 return all;
               }(),
               cluster.etcd_prefix,
               std::chrono::duration_cast<std::chrono::milliseconds>(cluster.term).count());
  return node;
}

Status EtcdNode::Start() {
  ledger_->Start();
  limits_->Start();  // lane limits
  asio::co_spawn(io_,
                 side_->Run([this](const lease::RenewRequest& request) {
                   if (!stopping_) ledger_->Renew(request);
                 }),
                 asio::detached);
  return Status::Ok();
}

void EtcdNode::Stop() {
  if (stopping_) return;
  stopping_ = true;
  side_->Stop();
  limits_->Stop();  // lane limits
  // R5: admit nothing new, then hand what is held to the successor on this
  // machine, so the ledger need not wait for this instance's silence. The
  // etcd lease is left to expire (never revoked).
  std::optional<lease::Goodbye> bye = side_->Freeze();
  if (!bye) {
    ledger_->Stop();
    return;
  }
  asio::co_spawn(
      io_,
      [this, b = std::move(*bye)]() -> awaitable<void> {
        Status s = co_await ledger_->Goodbye(b);
        if (s.ok()) {
          spdlog::info("etcd ledger: goodbye written (what this broker holds is handed to its "
                       "successor on this machine)");
        } else {
          spdlog::warn("etcd ledger: goodbye not written: {} (this instance is forgotten after "
                       "its silence instead)",
                       s.message());
        }
        ledger_->Stop();
      },
      asio::detached);
}

std::optional<std::string> EtcdNode::NotAcceptedReason() const {
  return side_->NotAcceptedReason(std::string("the ") + kLedgerName);
}

bool EtcdNode::MayRegister(std::size_t target, std::uint32_t registered) const {
  return side_->MayRegister(target, registered);
}

json::object EtcdNode::AgentView() const {
  json::object view = side_->View();
  view["coordinator"] = kLedgerName;
  view["connected"] = ledger_->connected();
  view["etcd_endpoint"] = ledger_->endpoint();
  return view;
}

awaitable<json::object> EtcdNode::Leases() {
  json::object out{{"ok", true}, {"coordinator", kLedgerName}, {"agent", AgentView()}};
  auto read = co_await ledger_->Snapshot();
  if (read.ok()) {
    out["ledger"] = broker::SnapshotJson(read->snapshot);
    out["etcd"] = json::object{{"endpoint", read->endpoint},
                               {"revision", std::to_string(read->revision)}};
  } else {
    out["ledger"] = nullptr;
    out["ledger_error"] = "etcd ledger: " + read.status().message();
  }
  co_return out;
}

awaitable<json::object> EtcdNode::Limits() {
  if (limits_) co_return co_await limits_->Limits();  // lane limits
  auto limits = co_await ledger_->Limits();
  if (!limits.ok()) co_return Failed(limits.status(), "etcd ledger");
  json::array ts;
  for (const auto& [name, limit] : *limits) {
    ts.push_back(json::object{{"target", name}, {"limit", limit}, {"limit_source", "etcd ledger"}});
  }
  co_return json::object{{"ok", true}, {"coordinator", kLedgerName}, {"targets", std::move(ts)}};
}

awaitable<json::object> EtcdNode::SetLimit(std::size_t target, std::uint32_t limit,
                                           std::string who) {
  // lane limits: the record (source, time, who) and the ledger's limit in one transaction.
  if (limits_) co_return co_await limits_->SetLimit(target, limit, std::move(who));
  if (target >= cfg_.targets.size()) {
    co_return lp::ErrorReply(Errc::kUnknownTarget, "no such target");
  }
  const std::string name = cfg_.targets[target].name;
  lease::AdminChange change;
  change.kind = lease::AdminChange::Kind::kSetLimit;
  change.target = name;
  change.limit = limit;
  auto read = co_await ledger_->Admin(change);
  if (!read.ok()) co_return Failed(read.status(), "target " + name);
  spdlog::warn("{} on broker {}: target {}: limit set to {} in the etcd ledger", who, cfg_.id, name,
               limit);
  std::uint32_t now_limit = limit;
  for (const auto& t : read->snapshot.targets) {
    if (t.target == name) now_limit = t.limit;
  }
  co_return json::object{{"ok", true},
                         {"target", name},
                         {"limit", now_limit},
                         {"limit_source", "operator"},
                         {"coordinator", kLedgerName}};
}

awaitable<json::object> EtcdNode::Steer(json::object request, std::string who) {
  // The same checks and words as the embedded coordinator's (cluster_admin.cc).
  const json::value* opv = request.if_contains(lp::req::kOp);
  const std::string op = opv != nullptr && opv->is_string() ? std::string(opv->as_string()) : "";
  const std::string where = op + ": ";
  const json::value* bv = request.if_contains(lp::req::kBroker);
  if (bv == nullptr || !bv->is_string()) {
    co_return lp::ErrorReply(Errc::kInvalidArgument, where + "needs a string 'broker'");
  }
  if (Status s = lp::CheckBrokerId(std::string_view(bv->as_string())); !s.ok()) {
    co_return lp::ErrorReply(s.code(), where + "'broker': " + s.message());
  }
  const std::string id(bv->as_string());
  std::string target;
  if (const json::value* tv = request.if_contains(lp::req::kTarget); tv != nullptr) {
    if (!tv->is_string()) {
      co_return lp::ErrorReply(Errc::kInvalidArgument, where + "'target' must be a string");
    }
    target = std::string(tv->as_string());
  }
  const json::value* fv = request.if_contains(lp::req::kForce);
  const json::value* cv = request.if_contains(lp::req::kConfirmDead);
  const bool force = fv != nullptr && fv->is_bool() && fv->as_bool();
  const bool confirm_dead = cv != nullptr && cv->is_bool() && cv->as_bool();

  lease::AdminChange change;
  change.broker_id = id;
  change.target = target;
  const std::string until_renew =
      "; the grant it holds now (GRANTED) stays until its next renew: at once, as it sees the "
      "change in etcd";
  std::string what;
  if (op == lp::OpWireName(lp::Op::kUndrain)) {
    change.kind = lease::AdminChange::Kind::kResume;
    what = broker::steer_words::Undrained();
  } else if (op == lp::OpWireName(lp::Op::kDrain)) {
    change.kind = lease::AdminChange::Kind::kDrain;
    what = broker::steer_words::Drained(until_renew);
  } else if (op == lp::OpWireName(lp::Op::kRevoke) && force) {
    if (auto refused = broker::steer_words::RefuseForcedRevoke(where, id, target, confirm_dead)) {
      co_return *refused;
    }
    change.kind = lease::AdminChange::Kind::kForceRevoke;
    what = broker::steer_words::ForceRevoked();
  } else if (op == lp::OpWireName(lp::Op::kRevoke) && !target.empty()) {
    change.kind = lease::AdminChange::Kind::kRevokeTarget;
    what = broker::steer_words::RevokedTarget(target, until_renew);
  } else if (op == lp::OpWireName(lp::Op::kRevoke)) {
    change.kind = lease::AdminChange::Kind::kRevoke;
    what = broker::steer_words::Revoked(until_renew);
  } else {
    co_return lp::ErrorReply(Errc::kProtocol, "unknown admin op '" + EscapeText(op, 64) + "'");
  }
  auto read = co_await ledger_->Admin(change);
  if (!read.ok()) {
    std::string message = where + read.status().message();
    if (read.status().code() == Errc::kConflict) {
      message += " (known: " + cfg_.cluster->BrokerIds() + ")";
    }
    co_return lp::ErrorReply(read.status().code(), message);
  }
  const std::string by = who + " via broker " + cfg_.id;
  spdlog::warn("{}: broker {} {}", by, id, what);
  co_return json::object{{"ok", true},
                         {"broker", id},
                         {"op", op},
                         {"coordinator", kLedgerName},
                         {"persisted", true},
                         {"message", "broker " + id + " " + what},
                         {"targets", BrokerRows(read->snapshot, id)}};
}

awaitable<json::object> EtcdNode::ConfirmStopped(std::string broker) {
  co_return lp::ErrorReply(
      Errc::kInvalidArgument,
      "confirm-stopped " + EscapeText(broker, 128) +
          ": not needed with ledger = \"etcd\": there is no coordinator to wait for (a newer "
          "cluster file generation replaces the stored one by transaction)");
}

void EtcdNode::ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who) {
  if (limits_) return limits_->ReportRefusal(target, held, who);  // lane limits
  if (target >= cfg_.targets.size() || stopping_) return;
  ++refusals_dropped_;
  LogLimited(spdlog::level::warn, "refusal report lost", cfg_.targets[target].name,
             "target {}: {} reports a session-limit refusal (this broker held {}), but limit "
             "discovery is not available with the etcd ledger in this build: not acted on ({} so "
             "far)",
             cfg_.targets[target].name, who, held, refusals_dropped_);
}

const broker::LimitKeeper* EtcdNode::CoordinatorLimits() const {
  return limits_ ? limits_->keeper() : nullptr;  // lane limits
}

}  // namespace dsb::etcd
