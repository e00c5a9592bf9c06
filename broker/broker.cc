#include "broker/broker.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <spdlog/spdlog.h>

#include "broker/cluster.h"
#include "broker/config/quote.h"
#include "broker/instance_lock.h"
#include "broker/limit_keeper.h"
#include "broker/state_file.h"
#include "broker/target.h"
#include "common/local_frame.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using asio::use_awaitable;
using local_stream = asio::local::stream_protocol;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

json::object ErrorReply(Errc code, const std::string& message) {
  return json::object{{"ok", false}, {"error", ErrcName(code)}, {"message", message}};
}

std::int64_t AgoMs(Clock::time_point then, Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - then).count();
}

}  // namespace

struct ClientRecord {
  std::uint32_t owner = 0;
  std::string target;
  std::string name;
  pid_t pid = 0;
  uid_t uid = 0;
  Clock::time_point since;
  bool adopted = false;
};

class Session;

struct Broker::Impl {
  config::BrokerConfig config;
  asio::io_context io{1};
  local_stream::acceptor acceptor{io};
  asio::signal_set signals{io, SIGTERM, SIGINT};
  asio::steady_timer grace_timer{io};
  asio::steady_timer quarantine_timer{io};
  std::map<std::string, std::unique_ptr<Target>> targets;
  std::vector<Target*> ordered;  // config order (the lease agent's indices)
  std::unique_ptr<ClusterNode> cluster;
  // Single-machine mode: the effective limit of each target (section 8). In a
  // cluster the coordinator keeps them (ClusterNode).
  std::unique_ptr<LimitKeeper> limits;
  // Cluster mode: the agent's latest capacity per target, and a clamp set when
  // a client was refused for the server's limit: until the next grant is
  // applied, no action above what was held then (the coordinator lowers the
  // limit meanwhile; without the clamp the lease would keep admitting into a
  // full server until the shrunk grant arrives).
  std::vector<lease::TargetCapacity> lease_caps;
  struct RefusalClamp {
    std::uint32_t capacity = 0;
    std::uint64_t applied = 0;  // the grant in force when it was set
  };
  std::vector<std::optional<RefusalClamp>> clamps;
  void ApplyLease(std::size_t index);
  // Held for the broker's life: its socket and every segment it manages.
  std::optional<InstanceLock> socket_lock;
  std::vector<InstanceLock> segment_locks;
  // broker.state_dir: what survives a machine restart (see state_file.h).
  std::optional<std::filesystem::path> state_path;
  std::optional<InstanceLock> state_lock;  // <state_dir>/<id>.state.lock
  BrokerState state;

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
  Clock::time_point started = Clock::now();
  bool in_grace = false;
  bool stopping = false;
  int exit_code = 0;

  Status Open();
  Status BindSocket();
  void StartAccept();
  void ArmQuarantineTimer();
  void EndGrace();
  void Shutdown();

  json::object Handle(Session& s, const json::object& req);
  json::object HandleRegister(Session& s, const json::object& req);
  json::object HandleRefusal(Session& s, const json::object& req);
  awaitable<json::object> SetLimit(const json::object& req);
  awaitable<json::object> StatusAsync();
  std::size_t IndexOf(const Target& t) const;
  // Single mode: capacity follows the effective limit (write-ahead on a raise).
  void ApplyLimit(std::size_t index, const lease::LimitChange& change);
  json::object StatusReply();
  awaitable<json::object> Leases();
  json::object Clients();
  void OnSessionClosed(Session& s);
  std::uint32_t RegisteredOn(const std::string& target) const;
};

// One connection on the local socket: a registered client, or dsbctl.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Broker::Impl& broker, local_stream::socket socket)
      : broker_(broker), socket_(std::move(socket)) {}

  void Start() {
    asio::co_spawn(socket_.get_executor(), [self = shared_from_this()] { return self->Run(); },
                   asio::detached);
  }
  void Close() {
    boost::system::error_code ec;
    socket_.shutdown(local_stream::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  std::optional<ClientRecord>& record() { return record_; }
  pid_t peer_pid() const { return peer_pid_; }
  uid_t peer_uid() const { return peer_uid_; }

 private:
  awaitable<void> Run() {
    if (!CheckPeer()) {
      co_await Send(ErrorReply(Errc::kPermissionDenied, refusal_));
      Finish();
      co_return;
    }
    for (;;) {
      unsigned char header[4];
      auto [ec, n] = co_await asio::async_read(socket_, asio::buffer(header), use_nothrow);
      if (ec) break;
      const std::size_t len = (std::size_t{header[0]} << 24) | (std::size_t{header[1]} << 16) |
                              (std::size_t{header[2]} << 8) | std::size_t{header[3]};
      if (len > kMaxLocalFrame) {
        spdlog::warn("local peer pid {} uid {}: announced a {}-byte request (limit {}); closing",
                     peer_pid_, peer_uid_, len, kMaxLocalFrame);
        co_await Send(ErrorReply(Errc::kProtocol, "request of " + std::to_string(len) +
                                                      " bytes exceeds the " +
                                                      std::to_string(kMaxLocalFrame) +
                                                      "-byte limit"));
        break;
      }
      std::string body(len, '\0');
      auto [ec2, n2] = co_await asio::async_read(socket_, asio::buffer(body), use_nothrow);
      if (ec2) break;
      boost::system::error_code jec;
      json::value v = json::parse(body, jec);
      json::object reply;
      if (jec || !v.is_object()) {
        spdlog::warn("local peer pid {}: malformed request ({} bytes): not a JSON object",
                     peer_pid_, len);
        reply = ErrorReply(Errc::kProtocol, "request is not a JSON object");
      } else {
        try {
          const json::value* op = v.as_object().if_contains("op");
          if (op != nullptr && op->is_string() && op->as_string() == "leases") {
            reply = co_await broker_.Leases();
          } else if (op != nullptr && op->is_string() && op->as_string() == "set_limit") {
            reply = co_await broker_.SetLimit(v.as_object());
          } else if (op != nullptr && op->is_string() && op->as_string() == "status") {
            reply = co_await broker_.StatusAsync();
          } else {
            reply = broker_.Handle(*this, v.as_object());
          }
        } catch (const std::exception& e) {
          spdlog::warn("local peer pid {}: bad request: {}", peer_pid_, e.what());
          reply = ErrorReply(Errc::kProtocol, std::string("bad request: ") + e.what());
        }
      }
      if (!co_await Send(reply)) break;
    }
    Finish();
  }

  awaitable<bool> Send(const json::object& reply) {
    std::string body = json::serialize(reply);
    if (body.size() > kMaxLocalFrame) {
      body = json::serialize(ErrorReply(Errc::kInternal, "reply too large"));
    }
    std::string frame = FrameHeader(body.size()) + body;
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(frame), use_nothrow);
    co_return !ec;
  }

  bool CheckPeer() {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      refusal_ = "cannot read peer credentials";
      return false;
    }
    peer_pid_ = cred.pid;
    peer_uid_ = cred.uid;
    const config::BrokerConfig& c = broker_.config;
    const bool ok = cred.uid == 0 || cred.uid == ::geteuid() ||
                    std::find(c.allowed_uids.begin(), c.allowed_uids.end(), cred.uid) !=
                        c.allowed_uids.end() ||
                    (c.group && cred.gid == c.group->gid);
    if (!ok) {
      refusal_ = "uid " + std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) +
                 ") may not use this broker; add it to broker.allowed_uids or use the group " +
                 (c.group ? "'" + c.group->name + "'" : std::string("(none configured)"));
      spdlog::warn("refused local peer: {}", refusal_);
    }
    return ok;
  }

  void Finish() {
    Close();
    broker_.OnSessionClosed(*this);
  }

  Broker::Impl& broker_;
  local_stream::socket socket_;
  std::optional<ClientRecord> record_;
  pid_t peer_pid_ = 0;
  uid_t peer_uid_ = 0;
  std::string refusal_;
};

// ---------------------------------------------------------------------------

Status Broker::Impl::Open() {
  const auto now = Clock::now();
  if (config.metrics) {
    spdlog::warn("broker.metrics ({}) is accepted but this build serves no Prometheus endpoint "
                 "yet; use `dsbctl status --json`",
                 config.metrics->ToString());
  }
  // Lock before touching anything: a second broker with an overlapping config
  // must not attach to, bump, re-shape or free a running broker's segments,
  // nor write this broker's state file.
  const std::optional<gid_t> group =
      config.group ? std::optional<gid_t>(static_cast<gid_t>(config.group->gid)) : std::nullopt;
  std::error_code dir_ec;
  std::filesystem::create_directories(config.socket.parent_path(), dir_ec);
  if (dir_ec) {
    return {Errc::kBrokerUnavailable, "cannot create the socket's folder " +
                                          config.socket.parent_path().string() + ": " +
                                          dir_ec.message()};
  }
  auto sock_lock = InstanceLock::Acquire(InstanceLock::Beside(config.socket),
                                         "socket " + config.socket.string(), group);
  if (!sock_lock.ok()) return sock_lock.status();
  socket_lock.emplace(std::move(sock_lock).value());
  std::optional<UncleanEnd> unclean;
  if (Status st = OpenState(&unclean); !st.ok()) return st;
  for (const config::TargetConfig& t : config.targets) {
    const std::string segment = shm::SegmentName(config.shm_prefix, t.name);
    auto seg_lock = InstanceLock::Acquire(InstanceLock::ForSegment(segment),
                                          "segment " + segment + " (target " + t.name + ")", group);
    if (!seg_lock.ok()) return seg_lock.status();
    segment_locks.push_back(std::move(seg_lock).value());
  }
  auto initial_capacity = [&](const config::TargetConfig& t) {
    return config.cluster_mode() ? static_cast<std::uint32_t>(config.self().floor)  // B1
                                 : static_cast<std::uint32_t>(t.limit - t.reserve);
  };
  if (state_path) {
    // Written before any segment is touched: what this life may hand out is
    // on disk before a client can use it. After an unclean end the earlier
    // high water is carried on (sessions of that life may still be open).
    state.pid = ::getpid();
    state.clean = false;
    for (const config::TargetConfig& t : config.targets) {
      state.capacity_high_water[t.name] =
          std::max(initial_capacity(t), unclean ? unclean->For(t) : 0);
    }
    if (unclean && unclean->high_water) {
      for (const auto& [name, hw] : *unclean->high_water) {
        if (hw > 0 && state.capacity_high_water.count(name) == 0) {
          spdlog::warn("state file lists target '{}' (up to {} session(s) after an unclean end) "
                       "but the config has no such target any more: if it was renamed, those "
                       "sessions may still be open on the server and are not held back",
                       name, hw);
        }
      }
    }
    if (Status st = WriteState(*state_path, state); !st.ok()) {
      return {Errc::kConfig, "broker.state_dir: " + st.message()};
    }
  }
  for (const config::TargetConfig& t : config.targets) {
    const std::uint32_t capacity = initial_capacity(t);
    auto target = Target::Open(config, t, capacity, now);
    if (!target.ok()) return target.status();
    Target& tg = **target;
    // A segment left by a cluster-mode broker carries a lease fence; a
    // single-machine broker has no lease: clear it, or clients would fence.
    if (!config.cluster_mode()) tg.table().SetLeaseFence(0, 0);
    if (tg.adopted_segment()) {
      in_grace = true;
      spdlog::info("target {}: adopted existing segment {}: {} owners hold slots; they have {} "
                   "ms to reconnect",
                   t.name, tg.table().name(), tg.pending_owners().size(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(config.adopt_grace)
                       .count());
    } else {
      spdlog::info("target {}: segment {} created, {} slots, capacity {}", t.name,
                   tg.table().name(), tg.table().slot_count(), capacity);
      // Only when no segment existed: a re-shaped one showed nothing held.
      if (unclean && !tg.segment_existed()) HoldBackAfterUncleanEnd(tg, *unclean, now);
    }
    ordered.push_back(target->get());
    targets.emplace(t.name, std::move(target).value());
  }
  if (config.cluster_mode()) {
    ClusterNode::Hooks hooks;
    hooks.usage = [this] {
      std::vector<lease::TargetUsage> usage;
      for (Target* t : ordered) {
        const shm::Counts c = t->table().Count();
        // Quarantined and cooling slots count as held: the server may still
        // have them (B2). The B2 report uses every slot not disabled (free
        // ones included): a scan racing clients can undercount held slots,
        // never those.
        usage.push_back(lease::TargetUsage{c.held_action + c.quarantined + c.cooling, c.waiters,
                                           c.enabled + c.retiring + c.cooling_retiring});
      }
      return usage;
    };
    hooks.apply = [this](std::size_t i, const lease::TargetCapacity& cap) {
      if (i >= ordered.size()) return;
      lease_caps.resize(ordered.size());
      lease_caps[i] = cap;
      ApplyLease(i);
    };
    auto node = ClusterNode::Create(io, config, std::move(hooks));
    if (!node.ok()) return node.status();
    cluster = std::move(node).value();
  }
  if (!config.cluster_mode()) {
    std::vector<std::uint32_t> minimum;
    for (const config::TargetConfig& t : config.targets) {
      // One instance's system connection and one action slot above the reserve.
      minimum.push_back(static_cast<std::uint32_t>(std::min(t.limit, t.reserve + 2)));
    }
    auto keeper = LimitKeeper::Create(
        io, config.targets, minimum,
        {[this](std::size_t i, const lease::LimitChange& c) { ApplyLimit(i, c); }});
    if (!keeper.ok()) return keeper.status();
    limits = std::move(keeper).value();
  }
  if (Status s = BindSocket(); !s.ok()) return s;
  return cluster ? cluster->Start() : Status::Ok();
}

Status Broker::Impl::OpenState(std::optional<UncleanEnd>* unclean) {
  if (!config.state_dir) {
    bool quarantines = false;
    for (const config::TargetConfig& t : config.targets) quarantines |= t.quarantine.count() > 0;
    if (quarantines) {
      spdlog::warn("broker.state_dir is not set: after a machine restart this broker cannot know "
                   "that sessions of its earlier clients may still be open on the server, and "
                   "will not quarantine them");
    }
    return Status::Ok();
  }
  std::error_code ec;
  std::filesystem::create_directories(*config.state_dir, ec);
  if (ec) {
    return {Errc::kConfig,
            "broker.state_dir: cannot create " + config.state_dir->string() + ": " + ec.message()};
  }
  state_path = StateFilePath(*config.state_dir, config.id);
  auto lock = InstanceLock::Acquire(InstanceLock::Beside(*state_path),
                                    "state file " + state_path->string() +
                                                   " (broker id " + config.id + ")");
  if (!lock.ok()) return lock.status();
  state_lock.emplace(std::move(lock).value());
  auto read = ReadState(*state_path);
  if (!read.ok()) {
    // Our own file, damaged: assume the worst (an unclean end at full capacity).
    spdlog::warn("{}; assuming the previous broker ended uncleanly at full capacity (the file "
                 "is rewritten now)",
                 read.status().message());
    *unclean = UncleanEnd{"the previous broker", std::nullopt};
    return Status::Ok();
  }
  const std::optional<BrokerState>& previous = *read;
  if (previous && !previous->clean) {
    *unclean = UncleanEnd{"the previous broker (pid " + std::to_string(previous->pid) + ")",
                          previous->capacity_high_water};
  }
  return Status::Ok();
}

void Broker::Impl::ApplyLease(std::size_t i) {
  if (i >= lease_caps.size()) return;
  const lease::TargetCapacity& cap = lease_caps[i];
  const std::uint32_t floor = cap.action_capacity - cap.lease;
  std::uint32_t wanted = cap.action_capacity;
  clamps.resize(ordered.size());
  if (clamps[i] && clamps[i]->applied == cap.applied) {
    wanted = std::max(floor, std::min(wanted, clamps[i]->capacity));
  } else {
    clamps[i].reset();  // a newer grant: the coordinator has decided
  }
  // Write-ahead: the high water is on disk before a client can use it;
  // if it cannot be written, capacity stays at what is on disk.
  const std::uint32_t capacity = std::max(floor, RecordCapacity(*ordered[i], wanted));
  ordered[i]->SetLeaseCapacity(capacity, floor, cap.lease_valid_until);
}

std::size_t Broker::Impl::IndexOf(const Target& t) const {
  return static_cast<std::size_t>(std::find(ordered.begin(), ordered.end(), &t) - ordered.begin());
}

void Broker::Impl::ApplyLimit(std::size_t index, const lease::LimitChange& change) {
  if (index >= ordered.size()) return;
  Target& tg = *ordered[index];
  const auto reserve = static_cast<std::uint32_t>(tg.config().reserve);
  const std::uint32_t wanted = change.to > reserve ? change.to - reserve : 0;
  // A raise is written ahead to the state file (see RecordCapacity); a shrink
  // retires held slots above it (they come back as their holders release).
  const std::uint32_t capacity =
      wanted > tg.capacity() ? RecordCapacity(tg, wanted) : wanted;
  tg.SetCapacity(capacity);
}

void Broker::Impl::HoldBackAfterUncleanEnd(Target& tg, const UncleanEnd& unclean,
                                           Clock::time_point now) {
  const config::TargetConfig& t = tg.config();
  const std::uint32_t slots = unclean.For(t);
  const std::uint32_t registrations =
      config.cluster_mode() ? static_cast<std::uint32_t>(config.self().system_slots) : 0;
  if (slots + registrations == 0) return;
  if (t.quarantine.count() <= 0) {
    spdlog::warn("target {}: {} ended without a clean stop and segment {} is gone (machine "
                 "restart?); its clients' sessions may still be open on the server, but "
                 "quarantine is 0 for this target: nothing held back",
                 t.name, unclean.who, tg.table().name());
    return;
  }
  const std::uint32_t held_back = tg.HoldBackAfterUncleanEnd(slots, registrations, now);
  spdlog::warn("target {}: {} ended without a clean stop and segment {} is gone (machine "
               "restart?): up to {} session(s) of its clients may still be open on the server; "
               "{} slot(s){} held in quarantine for {} ms",
               t.name, unclean.who, tg.table().name(), slots + registrations, held_back,
               registrations > 0 ? " and " + std::to_string(registrations) + " registration(s)"
                                 : std::string(),
               std::chrono::duration_cast<std::chrono::milliseconds>(t.quarantine).count());
}

std::uint32_t Broker::Impl::RecordCapacity(const Target& tg, std::uint32_t capacity) {
  if (!state_path) return capacity;
  const std::uint32_t hw = state.capacity_high_water[tg.name()];
  if (capacity <= hw || stopping) return std::min(capacity, hw);
  BrokerState next = state;
  next.capacity_high_water[tg.name()] = capacity;
  if (Status st = WriteState(*state_path, next); !st.ok()) {
    spdlog::error("target {}: {}; capacity stays at {} (what the state file records) instead of "
                  "{}",
                  tg.name(), st.message(), hw, capacity);
    return hw;
  }
  state = std::move(next);
  return capacity;
}

Status Broker::Impl::BindSocket() {
  namespace fs = std::filesystem;
  const fs::path path = config.socket;
  std::error_code fec;
  fs::create_directories(path.parent_path(), fec);
  if (fs::exists(path, fec)) {
    // A socket file exists: refuse if a broker answers on it, else it is stale.
    if (auto fd = ConnectLocal(path.string()); fd.ok()) {
      ::close(*fd);
      return {Errc::kBrokerUnavailable,
              "another broker is already listening on " + path.string()};
    }
    fs::remove(path, fec);
  }
  boost::system::error_code ec;
  acceptor.open(local_stream(), ec);
  if (!ec) acceptor.bind(local_stream::endpoint(path.string()), ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return {Errc::kBrokerUnavailable, "cannot listen on " + path.string() + ": " + ec.message()};
  }
  ::chmod(path.c_str(), 0660);
  if (config.group && ::chown(path.c_str(), static_cast<uid_t>(-1), config.group->gid) != 0) {
    return {Errc::kBrokerUnavailable,
            "cannot give socket " + path.string() + " to group " + config.group->name};
  }
  return Status::Ok();
}

void Broker::Impl::StartAccept() {
  acceptor.async_accept([this](boost::system::error_code ec, local_stream::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted && !stopping) {
        spdlog::warn("accept failed: {}", ec.message());
        StartAccept();
      }
      return;
    }
    if (sessions.size() >= static_cast<std::size_t>(config.max_clients) + 16) {
      spdlog::warn("refusing a local connection: {} connections open (max_clients {})",
                   sessions.size(), config.max_clients);
    } else {
      auto s = std::make_shared<Session>(*this, std::move(socket));
      sessions.emplace(s.get(), s);
      s->Start();
    }
    StartAccept();
  });
}

std::uint32_t Broker::Impl::RegisteredOn(const std::string& target) const {
  std::uint32_t n = 0;
  for (const auto& [key, rec] : clients) n += rec.target == target ? 1u : 0u;
  return n;
}

json::object Broker::Impl::Handle(Session& s, const json::object& req) {
  const json::value* op = req.if_contains("op");
  if (op == nullptr || !op->is_string()) return ErrorReply(Errc::kProtocol, "request has no 'op'");
  const json::string& name = op->as_string();
  if (stopping) return ErrorReply(Errc::kShuttingDown, "broker is shutting down");
  if (name == "register") return HandleRegister(s, req);
  if (name == "report_session_limit") return HandleRefusal(s, req);
  if (name == "clients") return Clients();
  if (name == "ping") return json::object{{"ok", true}};
  return ErrorReply(Errc::kProtocol, "unknown op '" + std::string(name).substr(0, 64) +
                                         "' (known: register, report_session_limit, status, "
                                         "clients, leases, set_limit, ping)");
}

json::object Broker::Impl::HandleRefusal(Session& s, const json::object& req) {
  if (!s.record()) return ErrorReply(Errc::kNotRegistered, "register first");
  Target& t = *targets.at(s.record()->target);
  t.CountSessionLimitReport();
  // What dsb held for the account at this instant: every slot the server may
  // count (held, cooling, quarantined), less the refused attempt if the client
  // still holds its permit (it names the slot; checked against the table).
  const shm::Counts c = t.table().Count();
  std::uint32_t held = c.held_action + c.held_system + c.quarantined + c.cooling;
  const json::value* slot = req.if_contains("slot");
  const json::value* word = req.if_contains("word");
  if (slot != nullptr && word != nullptr && slot->is_number() && word->is_number()) {
    boost::system::error_code ec1, ec2;
    const auto index = slot->to_number<std::uint32_t>(ec1);
    const auto w = word->to_number<std::uint64_t>(ec2);
    if (!ec1 && !ec2 && shm::OwnerOf(w) == s.record()->owner && t.table().StillHeld(index, w) &&
        held > 0) {
      --held;
    }
  } else if (held > 0) {
    // An older client names no slot. It is told to report while it still
    // holds the refused attempt's permit: if it holds an action slot, leave
    // one out (at worst discovery settles one below the cap: safe).
    const auto holdings = t.table().HoldingsByOwner();
    if (auto h = holdings.find(s.record()->owner); h != holdings.end() && h->second.action > 0) {
      --held;
    }
  }
  std::string who = "client pid " + std::to_string(s.peer_pid()) + " (" + s.record()->name + ")";
  if (const json::value* d = req.if_contains("detail"); d != nullptr && d->is_string()) {
    const std::string detail(d->as_string().subview(0, std::min<std::size_t>(d->as_string().size(), 200)));
    if (!detail.empty()) who += " [" + config::Printable(detail, 200) + "]";
  }
  const std::size_t index = IndexOf(t);
  if (limits) {
    limits->OnRefusal(index, held, 1, who);
  } else if (cluster) {
    // The coordinator decides; what this broker held is its part of the count
    // (in cluster mode registrations are not in the table: count system_slots).
    const auto system_slots = static_cast<std::uint32_t>(config.self().system_slots);
    cluster->ReportRefusal(index, held + system_slots, who);
    // Admit no more actions here until the coordinator's next grant: the
    // server is full now (actions held, less the refused attempt).
    if (index < lease_caps.size()) {
      const std::uint32_t actions = held - std::min(held, c.held_system);
      clamps.resize(ordered.size());
      clamps[index] = RefusalClamp{actions, lease_caps[index].applied};
      ApplyLease(index);
    }
  }
  return json::object{{"ok", true}, {"held", held}};
}

json::object Broker::Impl::HandleRegister(Session& s, const json::object& req) {
  if (s.record()) return ErrorReply(Errc::kProtocol, "this connection is already registered");
  const json::value* tv = req.if_contains("target");
  if (tv == nullptr || !tv->is_string()) {
    return ErrorReply(Errc::kProtocol, "register needs a string 'target'");
  }
  const std::string target_name(tv->as_string());
  auto it = targets.find(target_name);
  if (it == targets.end()) {
    std::string known;
    for (const auto& [n, t] : targets) known += (known.empty() ? "" : ", ") + n;
    return ErrorReply(Errc::kUnknownTarget, "this broker serves no target '" +
                                                target_name.substr(0, 64) +
                                                "'; it serves: " + known);
  }
  Target& target = *it->second;
  if (clients.size() >= static_cast<std::size_t>(config.max_clients)) {
    return ErrorReply(Errc::kTooManyClients, "broker has max_clients (" +
                                                 std::to_string(config.max_clients) +
                                                 ") registrations; raise broker.max_clients");
  }
  const bool adopting = req.if_contains("owner") != nullptr;
  if (config.cluster_mode() && !adopting) {
    if (target.in_grace()) {
      return ErrorReply(Errc::kBrokerUnavailable,
                        "broker " + config.id + " restarted and is re-adopting its earlier "
                        "clients (adopt_grace); new registrations are taken after it ends, retry");
    }
    const auto system_slots = static_cast<std::uint32_t>(config.self().system_slots);
    const auto index = static_cast<std::size_t>(
        std::find(ordered.begin(), ordered.end(), &target) - ordered.begin());
    const std::uint32_t counted = RegisteredOn(target_name) + target.quarantined_registrations();
    if (!cluster->MayRegister(index, counted)) {
      return ErrorReply(Errc::kTooManyClients,
                        "broker " + config.id + " already has " + std::to_string(system_slots) +
                            " DigiScope instance(s) registered for target '" + target_name +
                            "' (system_slots = " + std::to_string(system_slots) +
                            (target.quarantined_registrations() > 0
                                 ? ", " + std::to_string(target.quarantined_registrations()) +
                                       " of them a dead client's, in quarantine"
                                 : std::string()) +
                            "); raise brokers[id=\"" + config.id +
                            "\"].system_slots in the cluster file");
    }
  }
  std::string name = "client";
  if (const json::value* n = req.if_contains("name"); n != nullptr && n->is_string()) {
    name = std::string(n->as_string()).substr(0, 64);
  }
  ClientRecord rec;
  rec.target = target_name;
  rec.name = name;
  rec.pid = s.peer_pid();
  rec.uid = s.peer_uid();
  rec.since = Clock::now();
  const std::string instance = std::to_string(target.table().instance_id());
  if (const json::value* ov = req.if_contains("owner"); ov != nullptr) {
    // A client of the previous broker instance reconnects to keep its slots.
    const json::value* iv = req.if_contains("instance");
    const auto owner = static_cast<std::uint32_t>(ov->to_number<std::uint64_t>());
    if (iv == nullptr || !iv->is_string() || iv->as_string() != instance) {
      return ErrorReply(Errc::kNotRegistered, "segment of target '" + target_name +
                                                  "' was re-created; register anew");
    }
    if (clients.count({target_name, owner}) > 0 || !target.Adopt(owner)) {
      return ErrorReply(Errc::kNotRegistered,
                        "owner " + std::to_string(owner) + " is not waiting for adoption on '" +
                            target_name + "' (grace over, or never held slots); register anew");
    }
    rec.owner = owner;
    rec.adopted = true;
    spdlog::info("target {}: adopted owner {} (pid {}, {}) after broker restart", target_name,
                 owner, rec.pid, name);
  } else {
    rec.owner = target.table().AllocateOwner();
    spdlog::info("target {}: registered owner {} (pid {}, uid {}, {})", target_name, rec.owner,
                 rec.pid, rec.uid, name);
  }
  s.record() = rec;
  clients[{rec.target, rec.owner}] = rec;
  return json::object{{"ok", true},
                      {"owner", rec.owner},
                      {"segment", target.table().name()},
                      {"instance", instance},
                      {"system_slot", config.cluster_mode() ? "none" : "table"},
                      {"mode", config.cluster_mode() ? "cluster" : "single"},
                      {"capacity", target.capacity()}};
}

void Broker::Impl::OnSessionClosed(Session& s) {
  sessions.erase(&s);
  if (!s.record() || stopping) return;
  const ClientRecord rec = *s.record();
  s.record().reset();
  clients.erase({rec.target, rec.owner});
  auto it = targets.find(rec.target);
  if (it == targets.end()) return;
  const std::uint32_t freed = it->second->Reclaim(rec.owner, Clock::now());
  if (config.cluster_mode()) it->second->QuarantineRegistration(Clock::now());
  const auto q = it->second->config().quarantine;
  spdlog::info("target {}: client pid {} ({}, owner {}) gone; {} slot(s) reclaimed{}", rec.target,
               rec.pid, rec.name, rec.owner, freed,
               freed > 0 && q.count() > 0
                   ? fmt::format(", quarantined for {} ms",
                                 std::chrono::duration_cast<std::chrono::milliseconds>(q).count())
                   : std::string());
  ArmQuarantineTimer();
}

void Broker::Impl::ArmQuarantineTimer() {
  Clock::time_point next = Clock::time_point::max();
  for (auto& [n, t] : targets) next = std::min(next, t->next_quarantine_end());
  if (next == Clock::time_point::max()) return;
  quarantine_timer.expires_at(next);
  quarantine_timer.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    const auto now = Clock::now();
    for (auto& [n, t] : targets) t->ExpireQuarantine(now);
    ArmQuarantineTimer();
  });
}

void Broker::Impl::EndGrace() {
  in_grace = false;
  const auto now = Clock::now();
  for (auto& [n, t] : targets) {
    const std::size_t missing = t->pending_owners().size();
    std::set<std::uint32_t> registered;
    for (const auto& [key, rec] : clients) {
      if (key.first == n) registered.insert(key.second);
    }
    const std::uint32_t freed = t->ReleaseUnadopted(now, registered);
    if (missing > 0) {
      spdlog::info("target {}: adoption grace over; {} owner(s) did not come back, {} slot(s) "
                   "reclaimed",
                   n, missing, freed);
    }
  }
  ArmQuarantineTimer();
}

json::object Broker::Impl::StatusReply() {
  json::array ts;
  const auto now = Clock::now();
  for (auto& [n, t] : targets) {
    const shm::Counts c = t->table().Count();
    json::object o{{"name", n},
                   {"limit", t->config().limit},
                   {"reserve", t->config().reserve},
                   {"capacity", t->capacity()},
                   {"held", c.held_action + c.held_system},
                   {"held_action", c.held_action},
                   {"held_system", c.held_system},
                   {"free", c.free},
                   {"waiting", c.waiters},
                   {"quarantined", c.quarantined},
                   {"cooling", c.cooling},
                   {"release_cooldown_ms",
                    std::chrono::ceil<std::chrono::milliseconds>(t->config().release_cooldown)
                        .count()},
                   {"retiring", c.retiring},
                   {"clients", RegisteredOn(n)},
                   {"pending_adoption", t->pending_owners().size()},
                   {"slots", t->table().slot_count()},
                   {"segment", t->table().name()},
                   {"revocation_generation", t->table().revocation_generation()},
                   {"session_limit_reports", t->session_limit_reports()},
                   {"slots_reclaimed", t->slots_reclaimed()},
                   {"quarantine_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                         t->config().quarantine)
                                         .count()}};
    if (limits) {
      for (const auto& kv : limits->Json(IndexOf(*t))) o[kv.key()] = kv.value();
    }
    // When the last quarantined slot comes back (ms from now, rounded up).
    const Clock::time_point last = t->last_quarantine_end();
    o["quarantine_left_ms"] =
        last == Clock::time_point::min()
            ? json::value(nullptr)
            : json::value(std::chrono::ceil<std::chrono::milliseconds>(
                              std::max(Clock::duration::zero(), last - now))
                              .count());
    ts.push_back(std::move(o));
  }
  return json::object{{"ok", true},
                      {"broker", config.id},
                      {"pid", ::getpid()},
                      {"mode", config.cluster_mode() ? "cluster" : "single"},
                      {"uptime_ms", AgoMs(started, now)},
                      {"adoption_grace", in_grace},
                      {"targets", std::move(ts)},
                      {"lease", cluster ? json::value(cluster->AgentView()) : json::value(nullptr)}};
}

json::object Broker::Impl::Clients() {
  json::array cs;
  const auto now = Clock::now();
  for (auto& [key, rec] : clients) {
    const std::uint32_t owner = rec.owner;
    const auto holdings = targets.at(rec.target)->table().HoldingsByOwner();
    auto h = holdings.find(owner);
    cs.push_back(json::object{
        {"owner", owner},
        {"target", rec.target},
        {"pid", rec.pid},
        {"uid", rec.uid},
        {"name", rec.name},
        {"held_action", h != holdings.end() ? h->second.action : 0},
        {"held_system", h != holdings.end() ? h->second.system : 0},
        {"connected_ms", AgoMs(rec.since, now)},
        {"adopted", rec.adopted}});
  }
  json::array pending;
  for (auto& [n, t] : targets) {
    for (std::uint32_t o : t->pending_owners()) {
      pending.push_back(json::object{{"owner", o}, {"target", n}});
    }
  }
  return json::object{{"ok", true}, {"clients", std::move(cs)}, {"pending", std::move(pending)}};
}

awaitable<json::object> Broker::Impl::StatusAsync() {
  json::object reply = StatusReply();
  if (cluster) {
    // The coordinator keeps the effective limits: ask it (or our own ledger).
    json::object limits_reply = co_await cluster->Limits();
    const json::value* list = limits_reply.if_contains("targets");
    json::array& ts = reply["targets"].as_array();
    if (list != nullptr && list->is_array()) {
      for (json::value& tv : ts) {
        json::object& o = tv.as_object();
        for (const json::value& lv : list->as_array()) {
          if (!lv.is_object()) continue;
          const json::object& lo = lv.as_object();
          const json::value* name = lo.if_contains("target");
          if (name == nullptr || *name != o["name"]) continue;
          for (const auto& kv : lo) {
            if (kv.key() != "target") o[kv.key()] = kv.value();
          }
        }
      }
    } else {
      reply["limit_error"] = limits_reply.contains("message") ? limits_reply["message"]
                                                              : json::value("no answer");
    }
  }
  co_return reply;
}

awaitable<json::object> Broker::Impl::SetLimit(const json::object& req) {
  const json::value* tv = req.if_contains("target");
  const json::value* lv = req.if_contains("limit");
  if (tv == nullptr || !tv->is_string() || lv == nullptr || !lv->is_int64()) {
    co_return ErrorReply(Errc::kInvalidArgument,
                         "set_limit needs a string 'target' and an integer 'limit'");
  }
  const std::string name(tv->as_string());
  auto it = targets.find(name);
  if (it == targets.end()) {
    co_return ErrorReply(Errc::kUnknownTarget,
                         "this broker serves no target '" + config::Printable(name, 64) + "'");
  }
  const std::int64_t value = lv->as_int64();
  if (value < 1 || value > 65535) {
    co_return ErrorReply(Errc::kInvalidArgument,
                         "limit must be between 1 and 65535, got " + std::to_string(value));
  }
  std::string who = "dsbctl";
  if (const json::value* w = req.if_contains("who"); w != nullptr && w->is_string()) {
    who = config::Printable(std::string(w->as_string()), 64);
  }
  const std::size_t index = IndexOf(*it->second);
  if (limits) {
    if (dsb::Status st = limits->SetOperatorLimit(index, static_cast<std::uint32_t>(value), who);
        !st.ok()) {
      co_return ErrorReply(st.code(), "target " + name + ": " + st.message());
    }
    json::object o = limits->Json(index);
    o["ok"] = true;
    o["target"] = name;
    co_return o;
  }
  co_return co_await cluster->SetLimit(index, static_cast<std::uint32_t>(value), who);
}

awaitable<json::object> Broker::Impl::Leases() {
  if (!cluster) {
    co_return ErrorReply(Errc::kInvalidArgument,
                         "broker " + config.id + " runs in single-machine mode: no leases "
                         "(set broker.cluster to share a limit between machines)");
  }
  co_return co_await cluster->Leases();
}

void Broker::Impl::Shutdown() {
  if (stopping) return;
  stopping = true;
  if (cluster) cluster->Stop();
  if (limits) limits->Stop();
  boost::system::error_code ec;
  acceptor.close(ec);
  std::error_code fec;
  std::filesystem::remove(config.socket, fec);
  grace_timer.cancel();
  quarantine_timer.cancel();
  signals.cancel();
  bool any_held = !clients.empty();  // a registered client may take slots any time
  std::uint64_t slots_kept = 0;
  for (auto& [n, t] : targets) {
    const shm::Counts c = t->table().Count();
    // Cooling slots too: the server may still count their sessions.
    slots_kept += c.held_action + c.held_system + c.quarantined + c.cooling;
    if (c.held_action + c.held_system + c.quarantined + c.cooling > 0 ||
        !t->pending_owners().empty() ||
        t->quarantined_registrations() > 0) {
      any_held = true;
    }
  }
  // Order matters for a broker that starts while this one stops: the state
  // file says clean before any lock file goes, and the locks themselves are
  // held until this process exits.
  if (any_held) {
    spdlog::info("shutting down; {} client(s) registered, {} slot(s) held or quarantined: "
                 "segments kept for the next broker to adopt (within its adopt_grace)",
                 clients.size(), slots_kept);
  } else {
    for (auto& [n, t] : targets) (void)shm::SlotTable::Remove(t->table().name());
    if (state_path) {
      state.clean = true;
      if (Status st = WriteState(*state_path, state); !st.ok()) spdlog::error("{}", st.message());
    }
    for (InstanceLock& l : segment_locks) l.RemoveFile();
    spdlog::info("shutting down; nothing held, segments removed");
  }
  // Sessions end without reclaiming (stopping is set): running clients keep
  // their slots and re-register with the next broker.
  for (auto& [ptr, weak] : sessions) {
    if (auto s = weak.lock()) s->Close();
  }
  if (socket_lock) socket_lock->RemoveFile();
}

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Broker::~Broker() = default;

Result<std::unique_ptr<Broker>> Broker::Create(config::BrokerConfig config) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  if (Status s = impl->Open(); !s.ok()) return s;
  return std::unique_ptr<Broker>(new Broker(std::move(impl)));
}

int Broker::Run() {
  Impl& b = *impl_;
  b.signals.async_wait([&b](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("signal {} received", sig);
    b.Shutdown();
  });
  if (b.in_grace) {
    b.grace_timer.expires_after(
        std::chrono::duration_cast<Clock::duration>(b.config.adopt_grace));
    b.grace_timer.async_wait([&b](boost::system::error_code ec) {
      if (!ec) b.EndGrace();
    });
  }
  b.ArmQuarantineTimer();
  // A limit_command answers before the first client is served, so no client
  // sees the configured ceiling when the server's cap is lower.
  if (b.limits) {
    b.limits->Start([&b] { if (!b.stopping) b.StartAccept(); });
  } else {
    b.StartAccept();
  }
  spdlog::info("broker {} ready on {} ({} mode, {} target(s))", b.config.id,
               b.config.socket.string(), b.config.cluster_mode() ? "cluster" : "single",
               b.targets.size());
  b.io.run();
  return b.exit_code;
}

void Broker::Stop() {
  asio::post(impl_->io, [this] { impl_->Shutdown(); });
}

}  // namespace dsb::broker
