// Internals of the broker daemon shared by its translation units, one per
// concern: broker.cc (Create, Run, Stop), startup.cc (Open, UndoFailedOpen),
// state_policy.cc (the state file: an unclean end, the capacity high water),
// capacity.cc (limit, lease and refusal holds; the cluster node's hooks),
// listen.cc (binding the local socket), shutdown.cc (the clean stop),
// clients.cc (registration, adoption, a client's end, the segment audit),
// local_server.cc (the local socket's connections) and admin.cc (the admin
// requests: status, clients, leases, set_limit, refusal reports). Not public.
//
// Thread rule: as Broker (everything on the single-threaded io_context).
#ifndef DSB_BROKER_BROKER_IMPL_H_
#define DSB_BROKER_BROKER_IMPL_H_

#include "broker/broker.h"

#ifndef _WIN32  // the Unix socket's headers; Windows serves a named pipe (local_transport.h)
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <spdlog/spdlog.h>

#include "broker/asio_helpers.h"
#include "broker/cluster.h"
#include "broker/service/control.h"
#include "broker/config/quote.h"
#include "broker/http/server.h"
#include "broker/http/status_page.h"
#include "broker/instance_lock.h"
#include "broker/limit_keeper.h"
#include "broker/local_request.h"
#include "broker/local_server.h"
#include "broker/owner_records.h"
#include "broker/peer_access.h"
#include "broker/secure_fs.h"
#include "broker/state_file.h"
#include "broker/target.h"
#include "common/local_frame.h"
#include "common/local_protocol.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using asio::use_awaitable;
using local_stream = asio::local::stream_protocol;

// Helpers shared by the translation units above.
inline json::object ErrorReply(Errc code, const std::string& message) {
  return local_protocol::ErrorReply(code, message);
}

inline std::int64_t AgoMs(Clock::time_point then, Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - then).count();
}

struct ClientRecord {
  std::uint32_t owner = 0;
  std::string target;
  std::string name;
  ProcessId pid = 0;
  AccountId uid{};
  Clock::time_point since;
  bool adopted = false;
  // The client said goodbye (a clean close): its end is not a death.
  bool leaving = false;
};

class Session;

struct Broker::Impl {
  config::BrokerConfig config;
  asio::io_context io{1};
  // The local socket, or on Windows the named pipe (local_transport.h).
  LocalAcceptor acceptor{io.get_executor()};
  // Stop requests (SIGTERM/SIGINT; on Windows console and service controls)
  // and reload requests (SIGHUP; the service's PARAMCHANGE): control.h.
  ControlEvents control{io};
  asio::steady_timer grace_timer{io};
  asio::steady_timer quarantine_timer{io};
  // Flushes the rate-limited log's counts (common/limited_log.h) every second;
  // cancelled by Shutdown, which writes what is still pending.
  asio::steady_timer log_flush_timer{io};
  void ArmLogFlushTimer();
  // Audits every segment (Target::Audit) this often (issue 9: repairs what a
  // client wrote that only the broker may write).
  static constexpr std::chrono::seconds kAuditInterval{1};
  asio::steady_timer audit_timer{io};
  std::map<std::string, std::unique_ptr<Target>> targets;
  std::vector<Target*> ordered;  // config order (the lease agent's indices)
  std::unique_ptr<ClusterNode> cluster;
  // Single-machine mode: the effective limit of each target (section 8). In a
  // cluster the coordinator keeps them (ClusterNode).
  std::unique_ptr<LimitKeeper> limits;
  // Cluster mode: the agent's latest capacity per target.
  std::vector<lease::TargetCapacity> lease_caps;
  // After a client was refused for the server's limit, no slot above what was
  // in use then (the refused attempt left out), while discovery gathers its
  // evidence: a refused thread that retries at once would be refused again at
  // the same level. It lasts kRefusalHold after the latest refusal, and in
  // cluster mode also until a newer grant is applied (the coordinator lowers
  // the limit meanwhile; without the hold the lease would keep admitting into
  // a full server until the shrunk grant arrives).
  static constexpr std::chrono::milliseconds kRefusalHold{300};
  struct RefusalHold {
    std::uint32_t capacity = 0;  // single mode: table slots; cluster: action slots
    Clock::time_point until;
    std::uint64_t applied = 0;  // cluster: the grant in force when it was set
  };
  std::vector<std::optional<RefusalHold>> holds;
  asio::steady_timer hold_timer{io};
  // The hold of target `index` if it is still in force (else it is dropped).
  const RefusalHold* ActiveHold(std::size_t index, Clock::time_point now);
  void ApplySingleCapacity(std::size_t index);
  // A refusal with `in_use` slots in use (the refused attempt left out).
  void HoldAfterRefusal(std::size_t index, std::uint32_t in_use);
  // Re-applies every target's capacity at `at` (when refusal holds end).
  void ArmHoldTimer(Clock::time_point at);
  void ApplyLease(std::size_t index);
  // Cluster mode: what the cluster node asks of the targets (their usage, a
  // freeze before a clean stop's goodbye, the lease deadlines adopted
  // segments inherited) and how it applies a grant (ApplyLease). Called by
  // Open once every target is open.
  ClusterNode::Hooks ClusterHooks();
  // Held for the broker's life: its socket and every segment it manages.
  std::optional<InstanceLock> socket_lock;
  std::vector<InstanceLock> segment_locks;
  // The socket's folders this start made (outermost first), removed again if
  // the start fails (secure_fs.h: EnsurePrivateFolder).
  std::vector<std::filesystem::path> created_socket_folders;
  // broker.state_dir: what survives a machine restart (see state_file.h).
  std::optional<std::filesystem::path> state_path;
  std::optional<InstanceLock> state_lock;  // <state_dir>/<id>.state.lock
  BrokerState state;
  // Set by Open(): the state file showed an earlier life that did not end clean
  // (that mark must survive a failed start).
  bool previous_unclean = false;
  // After Open() failed: removes what this start created (segments it made, its
  // socket, the state file's unclean mark when it set it, lock files) and logs
  // them. Segments it adopted stay for the next broker. Called once, before the
  // Impl is destroyed; the io_context has not run.
  void UndoFailedOpen();

  // What an earlier life that did not end clean may have left open on the
  // server, per target.
  struct UncleanEnd {
    std::string who;  // "the previous broker (pid N)"
    // Capacity high water per target; nullopt: the state file was unreadable,
    // so assume `limit - reserve`.
    std::optional<std::map<std::string, std::uint32_t>> high_water;
    std::uint32_t For(const config::TargetConfig& t) const {
      if (!high_water) return static_cast<std::uint32_t>(t.limit - t.reserve);
      auto it = high_water->find(t.name);
      return it == high_water->end() ? 0 : it->second;
    }
  };
  // Takes the state file's lock and reads it (nothing without state_dir).
  // Sets `unclean` if the previous life did not end clean.
  Status OpenState(std::optional<UncleanEnd>* unclean);
  void HoldBackAfterUncleanEnd(Target& tg, const UncleanEnd& unclean, Clock::time_point now);
  // Before capacity is raised to `capacity`: records it as the target's high
  // water in the state file (see state_file.h). Returns the capacity that may
  // be applied: `capacity`, or the recorded high water if the write failed.
  std::uint32_t RecordCapacity(const Target& tg, std::uint32_t capacity);
  std::map<Session*, std::weak_ptr<Session>> sessions;
  // Registered clients by (target, owner): owner ids are per segment.
  std::map<std::pair<std::string, std::uint32_t>, ClientRecord> clients;
  // Who registered each owner id, in "<socket>.owners" (owner_records.h):
  // after a restart only that uid may adopt the owner. Loaded by Open.
  OwnerRecords owner_records;
  // Writes owner_records; a failure is logged (rate-limited): a client whose
  // record is missing is later refused adoption and registers anew.
  void SaveOwnerRecords();
  Clock::time_point started = Clock::now();
  bool in_grace = false;
  bool stopping = false;
  int exit_code = 0;

  // The start (startup.cc): Open runs the steps below in order; the first
  // failure ends it (the caller then runs UndoFailedOpen).
  Status Open();
  Status TakeLocks(std::optional<UncleanEnd>* unclean);
  Status StartLimitKeeper();
  Status WriteStartState(const std::optional<UncleanEnd>& unclean);
  Status OpenTargets(const std::optional<UncleanEnd>& unclean, Clock::time_point now);
  void LoadOwnerRecords();
  // A target's capacity when its segment opens: the floor (cluster mode, B1)
  // or the effective limit less the reserve. REQUIRES: limits (single mode).
  std::uint32_t InitialCapacity(const config::TargetConfig& t) const;
  std::size_t ConfigIndex(const config::TargetConfig& t) const;
  Status BindSocket();
  // Starts the local socket's accept loop (LocalServer, local_server.h).
  void StartAccept();
  std::unique_ptr<LocalServer> local;
  // broker.metrics: the HTTP endpoint (broker/http/server.h), bound by
  // BindMetrics in Open, accepting from Run, closed by Shutdown. Null
  // without the key. Routes: /metrics (metrics.cc), others' pages.
  std::unique_ptr<http::Server> http;
  // The status page's routes and sampler (broker/http/status_page.h): started
  // by Run with the endpoint, stopped by Shutdown. Null without broker.metrics.
  std::unique_ptr<StatusPage> status_page;
  Status BindMetrics();
  // The /metrics reply (metrics_collect.cc; docs/metrics.md lists every metric).
  awaitable<std::string> MetricsText();
  // Counted for /metrics, per target in config order, for the broker's life.
  struct TargetMetrics {
    std::uint64_t lease_grants = 0;     // grants this broker's agent applied
    std::uint64_t lease_expiries = 0;   // leases that ran out (B1), not replaced
    std::uint64_t held_past_drain = 0;  // slots above the floor still held H after that
    // The drain check of the latest expiry: it ends H after the lease did.
    std::unique_ptr<asio::steady_timer> drain_timer;
  };
  std::vector<TargetMetrics> target_metrics;
  TargetMetrics& MetricsOf(std::size_t index);
  // Cluster mode, from the apply hook: counts a newly applied grant, and a
  // lease that ran out (then checks, H later, what is still held above the
  // floor: DESIGN "H is real time").
  void CountLeaseEvents(std::size_t index, const lease::TargetCapacity& before,
                        const lease::TargetCapacity& after, Clock::time_point now);
  void ArmQuarantineTimer();
  void ArmAuditTimer();
  void EndGrace();
  void Shutdown();
  // SIGHUP or PARAMCHANGE (reload.cc, control.h): waits for it; Reload reopens
  // the log file and applies what may change while running, logging what
  // needs a restart. `what` names the request in the log ("SIGHUP").
  void ArmReloadSignal();
  void Reload(const std::string& what);

  json::object HandleRegister(Session& s, const LocalRequest& req);
  json::object HandleRefusal(Session& s, const LocalRequest& req);
  // `peer_uid`/`peer_pid`: the requester (SO_PEERCRED), named in the log.
  awaitable<json::object> SetLimit(const LocalRequest& req, AccountId peer_uid,
                                   ProcessId peer_pid);
  // Write requests (set_limit, confirm_stopped, ...) are for root, the
  // broker's own uid and members of broker.admin_group (admin_rights.h):
  // nullopt if `peer` is one (logged with who asked), else the refusal to
  // send (logged, rate-limited per uid).
  // The allowed request is logged in one line with what it asks (target and
  // limit, broker and target); the account name is looked up for a refusal
  // only if its rate-limited line is written.
  std::optional<json::object> RefuseUnlessAdmin(const LocalRequest& req,
                                                const PeerCredentials& peer) const;
  awaitable<json::object> StatusAsync();
  // Cluster mode: puts the coordinator's effective limits (a ClusterNode::
  // Limits() reply) into a StatusReply(); a reply without targets marks every
  // limit_source "unknown" and sets limit_error. StatusAsync and the status
  // page (broker/http/status_page.h) both build status this way.
  static void MergeClusterLimits(json::object& reply, const json::object& limits_reply);
  std::size_t IndexOf(const Target& t) const;
  // Single mode: capacity follows the effective limit (write-ahead on a raise).
  void ApplyLimit(std::size_t index, const lease::LimitChange& change);
  json::object StatusReply();
  awaitable<json::object> Leases();
  // R3: tells the coordinator that `req.broker` runs no coordinator of an older
  // generation (its machine is gone), releasing the new coordinator's wait.
  awaitable<json::object> ConfirmStopped(const LocalRequest& req, AccountId peer_uid,
                                         ProcessId peer_pid);
  // revoke, drain, undrain (DESIGN C2): forwarded to the coordinator with who
  // asked. Failure: kInvalidArgument in single-machine mode, else the
  // coordinator's reply (ClusterNode::Steer).
  awaitable<json::object> SteerBroker(const LocalRequest& req, AccountId peer_uid,
                                      ProcessId peer_pid);
  json::object Clients();
  void OnSessionClosed(Session& s);
  std::uint32_t RegisteredOn(const std::string& target) const;
};

// One connection on the local socket: a registered client, or dsbctl. Run,
// the idle timeout and the admission hooks are in local_server.cc.
class Session : public std::enable_shared_from_this<Session> {
 public:
  // `id`: the connection's number in LocalServer's admission bookkeeping.
  Session(Broker::Impl& broker, LocalStream socket, PeerCredentials peer,
          std::uint64_t id)
      : broker_(broker), socket_(std::move(socket)), idle_timer_(broker_.io), peer_(std::move(peer)),
        id_(id) {}

  void Start() {
    asio::co_spawn(socket_.get_executor(), [self = shared_from_this()] { return self->Run(); },
                   asio::detached);
  }
  void Close() {
    idle_timer_.cancel();
    CloseLocalStream(socket_);
  }
  // Writes `frame` first unless a reply is being written (non-blocking, best
  // effort), then closes. For eviction ("broker full") and the idle timeout.
  void CloseWith(const std::string& frame);

  std::optional<ClientRecord>& record() { return record_; }
  ProcessId peer_pid() const { return peer_.pid; }
  const AccountId& peer_uid() const { return peer_.uid; }
  std::uint64_t id() const { return id_; }

 private:
  awaitable<void> Run();
  awaitable<json::object> Answer(const LocalRequest& req);
  awaitable<bool> Send(const json::object& reply);
  // Unregistered: closes the connection unless a whole request arrives within
  // broker.idle_timeout.
  void ArmIdleTimer();
  void Finish();

  Broker::Impl& broker_;
  LocalStream socket_;
  asio::steady_timer idle_timer_;
  std::optional<ClientRecord> record_;
  PeerCredentials peer_;
  std::uint64_t id_ = 0;
  bool writing_ = false;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_BROKER_IMPL_H_
