// The coordinator's admin channel (DESIGN section 9): what `dsbctl` asks of the
// coordinator through any broker of the cluster.
//
//  - CoordinatorAdmin answers the admin requests that reach the coordinator,
//    from its own broker or forwarded over the wire by another one
//    (wire::AdminRequest): the local protocol's leases, set_limit,
//    confirm_stopped, revoke, drain and undrain, with their names and fields
//    (common/local_protocol.h), plus its own "limits" op;
//  - revoke/drain/undrain (DESIGN C2) change the ledger's mode of a broker:
//    its later grants are 0 (or again its share); owed falls only by the
//    broker's acknowledging report or by silence, never at once, except for a
//    forced revoke (force + confirm_dead: the operator says the workstation is
//    dead; wrong, it breaks S). Each change is logged at warn with who made
//    it, kept in <state_dir>/<id>.modes (restored at the next start, so a
//    drained broker stays drained across a coordinator restart) and followed
//    by a revoke notice to that broker (`notify`) so it renews at once instead
//    of at its next renew. Losing the notice is harmless: the next renew (at
//    most D/3 later) gets the same answer;
//  - AskCoordinator is the forwarding side: a broker that is not the
//    coordinator sends the request over an authenticated wire::Channel and
//    returns the JSON answer.
//
// Thread rule: created and used on the broker's single-threaded io_context.
#ifndef DSB_BROKER_CLUSTER_ADMIN_H_
#define DSB_BROKER_CLUSTER_ADMIN_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "broker/config/broker_config.h"
#include "broker/lease/ledger.h"
#include "broker/limit_keeper.h"
#include "broker/wire/auth.h"

namespace dsb::broker {

// The coordinator's own admin op (no local op): the cluster's effective limits.
inline constexpr std::string_view kLimitsOp = "limits";
// Forwarded write ops (set_limit, revoke, drain, undrain): the operator, for the log.
inline constexpr std::string_view kWho = "who";
// A broker announces on its renew channel that it reads wire::kRevokeNotice
// ({"op": "notices"}): only such a channel is sent one (an older broker
// would refuse the unknown frame type and drop the channel). An older
// coordinator answers "unknown admin op", which the broker ignores.
inline constexpr std::string_view kNoticesOp = "notices";

// The ledger's view for `dsbctl leases` (JSON, durations in ms).
boost::json::object SnapshotJson(const lease::LedgerSnapshot& snapshot);

// Whether `file` (<state_dir>/<id>.modes) is one RestoreModes accepts:
// missing, or the JSON PersistModes writes. Run by ValidateForStart so
// `dsb-broker --check` refuses what the start does.
// Failure: kConfig "revoke/drain file <file> ...: fix it or remove it (...)".
Status CheckModesFile(const std::filesystem::path& file);

// The words of revoke/drain/undrain, shared by the embedded coordinator
// (CoordinatorAdmin) and the etcd ledger's node (etcd/etcd_node.cc) so both
// modes check and say the same. `until_renew` says when the grant the broker
// holds now ends, which differs by mode ("; the grant it holds now ...").
namespace steer_words {
std::string Undrained();
std::string Drained(const std::string& until_renew);
std::string ForceRevoked();
std::string RevokedTarget(const std::string& target, const std::string& until_renew);
std::string Revoked(const std::string& until_renew);
// A forced revoke of broker `id` is refused with this error reply (kInvalidArgument,
// prefixed with `where`) when it names a `target` (it is for the whole broker) or
// lacks `confirm_dead` (it may break S); nullopt: it may go on.
std::optional<boost::json::object> RefuseForcedRevoke(const std::string& where,
                                                      const std::string& id,
                                                      const std::string& target,
                                                      bool confirm_dead);
}  // namespace steer_words

class CoordinatorAdmin {
 public:
  // `cfg`, `ledger`, `limits` and `hello_waiting` (R3: brokers whose hello
  // answer the coordinator still awaits) are owned by the caller and outlive
  // this object.
  // `notify(broker)`: send that broker a revoke notice now ("" = every
  // broker). `modes_file`: where revoke/drain state is kept (nullopt: not kept).
  CoordinatorAdmin(const config::BrokerConfig& cfg, lease::Ledger& ledger, LimitKeeper& limits,
                   std::set<std::string>& hello_waiting,
                   std::function<void(const std::string& broker)> notify = {},
                   std::optional<std::filesystem::path> modes_file = std::nullopt);

  // Applies the revoke/drain state of the previous run (modes_file) to the
  // ledger. A missing file is nothing to restore. Failure: kConfig naming the
  // file (unreadable, not the JSON it writes); a broker no longer in the
  // cluster file is skipped with a warning.
  Status RestoreModes();

  // One admin request (JSON text) from broker `peer` (this broker's id when it
  // is asked locally). Success: the reply object with "ok": true. Failure: an
  // error reply (local_protocol::ErrorReply) naming the bad input: kProtocol
  // for text that is not an object with a string "op" or an unknown op,
  // kInvalidArgument for a bad field, kUnknownTarget for a target the cluster
  // does not have.
  boost::json::object Handle(const std::string& text, const std::string& peer);

  // {"ok", "coordinator", "targets": [limit view + "target"]}; with `broker`
  // (the broker that asks: `dsbctl status` on it) each target also has
  // "broker_mode": that broker's mode there (active, drained, revoked), which
  // its status shows.
  boost::json::object LimitsJson(std::string_view broker = {}) const;
  // An operator's limit for target `index`, logged with `who`. Failure:
  // kUnknownTarget, or the limit keeper's refusal naming the target.
  boost::json::object SetLimit(std::size_t index, std::uint32_t value, const std::string& who);

 private:
  // revoke, drain, undrain: `o` is the request object, `op` its op.
  boost::json::object Steer(std::string_view op, const boost::json::object& o,
                            const std::string& peer);
  Status PersistModes() const;
  // PersistModes; on failure logs and returns a text for the reply saying
  // what a coordinator restart would do ("" when written).
  std::string PersistModesSaying(const std::string& broker) const;

  // What an operator set per broker: its mode and the targets revoked alone.
  struct Steering {
    lease::BrokerMode mode = lease::BrokerMode::kActive;
    std::set<std::string> revoked_targets;
  };

  const config::BrokerConfig& cfg_;
  lease::Ledger& ledger_;
  LimitKeeper& limits_;
  std::set<std::string>& hello_waiting_;
  std::function<void(const std::string&)> notify_;
  std::optional<std::filesystem::path> modes_file_;
  std::map<std::string, Steering> steering_;
};

// Asks coordinator `coordinator_id` at `where` an admin question (`request`,
// JSON text) over a fresh authenticated channel. `timeout` bounds the connect
// and the answer each (status asks with a short one, so `dsbctl status`
// answers while the coordinator is down). Never fails as a value: an
// unreachable or silent coordinator gives {"ok": false, "error", "message"}
// naming it.
boost::asio::awaitable<boost::json::object> AskCoordinator(
    boost::asio::any_io_executor executor, std::string coordinator_id,
    config::HostPort where, const wire::Credentials& creds, std::string request,
    std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace dsb::broker

#endif  // DSB_BROKER_CLUSTER_ADMIN_H_
