#include "broker/broker_impl.h"
#include "broker/service_notify.h"
#include "common/limited_log.h"

#include <fcntl.h>

#include <cstring>

namespace dsb::broker {

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
  // The socket's folder holds the socket and its lock: only this broker may
  // write it, or another user could swap the socket (secure_fs.h). Clients
  // of the group need to search it.
  if (Status st = EnsurePrivateFolder(config.socket.parent_path(), "broker.socket's folder",
                                      {.mode = mode_t(group ? 0750 : 0755), .group = group},
                                      &created_socket_folders);
      !st.ok()) {
    return st;
  }
  auto sock_lock = InstanceLock::Acquire(InstanceLock::Beside(config.socket),
                                         "socket " + config.socket.string());
  if (!sock_lock.ok()) return sock_lock.status();
  socket_lock.emplace(std::move(sock_lock).value());
  std::optional<UncleanEnd> unclean;
  if (Status st = OpenState(&unclean); !st.ok()) return st;
  previous_unclean = unclean.has_value();
  for (const config::TargetConfig& t : config.targets) {
    const std::string segment = shm::SegmentName(config.shm_prefix, t.name);
    auto seg_lock = InstanceLock::Acquire(InstanceLock::ForSegment(segment),
                                          "segment " + segment + " (target " + t.name + ")");
    if (!seg_lock.ok()) return seg_lock.status();
    segment_locks.push_back(std::move(seg_lock).value());
  }
  if (!config.cluster_mode()) {
    // Before any segment is opened: the effective limits (restored from the
    // state_dir if an earlier life recorded them) decide the first capacity.
    std::vector<std::uint32_t> minimum;
    for (const config::TargetConfig& t : config.targets) {
      // One instance's system connection and one action slot above the reserve.
      minimum.push_back(static_cast<std::uint32_t>(std::min(t.limit, t.reserve + 2)));
    }
    std::optional<std::filesystem::path> limits_file;
    if (config.state_dir) limits_file = *config.state_dir / (config.id + ".limits");
    auto keeper = LimitKeeper::Create(
        io, config.targets, minimum,
        {[this](std::size_t i, const lease::LimitChange& c) { ApplyLimit(i, c); }}, limits_file);
    if (!keeper.ok()) return keeper.status();
    limits = std::move(keeper).value();
  }
  auto target_index = [&](const config::TargetConfig& t) {
    return static_cast<std::size_t>(&t - config.targets.data());
  };
  auto initial_capacity = [&](const config::TargetConfig& t) {
    if (config.cluster_mode()) return static_cast<std::uint32_t>(config.self().floor);  // B1
    const std::uint32_t limit = limits->limit(target_index(t));
    const auto reserve = static_cast<std::uint32_t>(t.reserve);
    return limit > reserve ? limit - reserve : 0;
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
    // Single mode without a recorded limit: an adopted segment is not raised
    // above the capacity the previous broker left (its effective limit may
    // have been discovered or set by an operator: raising it to the config
    // would send clients into refusals until rediscovered).
    const bool keep_lower = !config.cluster_mode() && !limits->restored(target_index(t));
    // Cluster mode (R1): nothing new until the coordinator accepts this
    // instance: a new segment starts empty, an adopted one keeps only what is
    // in use (its clients keep what they hold).
    auto target = Target::Open(config, t, config.cluster_mode() ? 0 : capacity, now, keep_lower,
                               config.cluster_mode());
    if (!target.ok()) return target.status();
    Target& tg = **target;
    // A segment left by a cluster-mode broker carries a lease fence; a
    // single-machine broker has no lease: clear it, or clients would fence.
    if (!config.cluster_mode()) tg.ClearLeaseFence();
    if (keep_lower && tg.adopted_segment() && tg.capacity() < capacity) {
      limits->Seed(target_index(t), tg.capacity() + static_cast<std::uint32_t>(t.reserve),
                   "kept from segment " + tg.segment_name() +
                       " adopted from the previous broker (set broker.state_dir to keep the "
                       "limit and its source across restarts; dsbctl set-limit raises it)");
    }
    if (tg.adopted_segment()) {
      in_grace = true;
      spdlog::info("target {}: adopted existing segment {}: {} owners hold slots; they have {} "
                   "ms to reconnect",
                   t.name, tg.segment_name(), tg.pending_owners().size(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(config.adopt_grace)
                       .count());
    } else {
      spdlog::info("target {}: segment {} created, {} slots, capacity {}", t.name,
                   tg.segment_name(), tg.slot_count(), capacity);
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
        const shm::Counts c = t->Counts();
        // Quarantined and cooling slots count as held: the server may still
        // have them (B2). The B2 report uses every slot not disabled (free
        // ones included): a scan racing clients can undercount held slots,
        // never those.
        // Registrations (R2): system slots marked in the table (adopted
        // owners that have not reconnected yet included), and dead clients'
        // registrations still in quarantine.
        const std::uint32_t registered =
            std::max(c.held_system, RegisteredOn(t->config().name)) +
            t->quarantined_registrations();
        usage.push_back(lease::TargetUsage{c.held_action + c.quarantined + c.cooling, c.waiters,
                                           c.enabled + c.retiring + c.cooling_retiring,
                                           registered});
      }
      return usage;
    };
    // R5: a clean stop admits nothing new before its goodbye counts what is held.
    hooks.freeze = [this] {
      for (Target* t : ordered) t->FreezeAtHeld();
    };
    // R1: adopted action slots are kept until the previous broker's lease deadline.
    for (Target* t : ordered) {
      hooks.inherited.push_back(t->adopted_segment() ? t->lease_deadline() : std::nullopt);
    }
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
  // Before the socket accepts anyone: who registered the owners of the
  // adopted segments (only they may adopt them); records of other segment
  // instances are dropped.
  std::map<std::string, std::uint64_t> adopted_instances;
  for (const auto& [n, t] : targets) {
    if (t->adopted_segment()) adopted_instances[n] = t->instance_id();
  }
  if (Status st = owner_records.Load(OwnerRecords::Beside(config.socket), adopted_instances);
      !st.ok()) {
    spdlog::warn("{}; no owner is recorded, so only root or the broker's user may re-adopt the "
                 "previous broker's owners (other clients register anew)",
                 st.message());
  } else if (!adopted_instances.empty()) {
    spdlog::info("{} owner(s) of the previous broker recorded with the uid that registered them",
                 owner_records.size());
  }
  // Written by Run once the start succeeded (a failed start leaves the file
  // as the previous broker wrote it, for the segments it keeps).
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
  // Only this broker may write there (secure_fs.h): nothing is written
  // through a link another user planted.
  if (Status st = EnsurePrivateFolder(*config.state_dir, "broker.state_dir",
                                      {.mode = 0700, .group = std::nullopt});
      !st.ok()) {
    return st;
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
  if (const RefusalHold* h = ActiveHold(i, Clock::now())) {
    wanted = std::max(floor, std::min(wanted, h->capacity));
  }
  // Write-ahead: the high water is on disk before a client can use it;
  // if it cannot be written, capacity stays at what is on disk.
  const std::uint32_t capacity = std::max(floor, RecordCapacity(*ordered[i], wanted));
  ordered[i]->SetLeaseCapacity(capacity, floor, cap.lease_valid_until);
}

const Broker::Impl::RefusalHold* Broker::Impl::ActiveHold(std::size_t index,
                                                          Clock::time_point now) {
  holds.resize(ordered.size());
  std::optional<RefusalHold>& h = holds[index];
  if (!h) return nullptr;
  const bool same_grant = cluster && index < lease_caps.size() &&
                          h->applied == lease_caps[index].applied;
  if (now < h->until || same_grant) return &*h;
  h.reset();  // the hold is over (cluster: and a newer grant decided)
  return nullptr;
}

std::size_t Broker::Impl::IndexOf(const Target& t) const {
  return static_cast<std::size_t>(std::find(ordered.begin(), ordered.end(), &t) - ordered.begin());
}

void Broker::Impl::ApplyLimit(std::size_t index, const lease::LimitChange&) {
  ApplySingleCapacity(index);
}

void Broker::Impl::ApplySingleCapacity(std::size_t index) {
  if (index >= ordered.size() || !limits) return;
  Target& tg = *ordered[index];
  const auto reserve = static_cast<std::uint32_t>(tg.config().reserve);
  const std::uint32_t limit = limits->limit(index);
  std::uint32_t wanted = limit > reserve ? limit - reserve : 0;
  if (const RefusalHold* h = ActiveHold(index, Clock::now())) {
    wanted = std::min(wanted, h->capacity);
  }
  // A raise is written ahead to the state file (see RecordCapacity); a shrink
  // retires held slots above it (they come back as their holders release).
  const std::uint32_t capacity = wanted > tg.capacity() ? RecordCapacity(tg, wanted) : wanted;
  if (capacity != tg.capacity()) tg.SetCapacity(capacity);
}

void Broker::Impl::ArmHoldTimer(Clock::time_point at) {
  hold_timer.expires_at(at);
  hold_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping) return;
    for (std::size_t i = 0; i < ordered.size(); ++i) {
      if (cluster) {
        ApplyLease(i);
      } else {
        ApplySingleCapacity(i);
      }
    }
  });
}

void Broker::Impl::HoldAfterRefusal(std::size_t index, std::uint32_t in_use) {
  if (index >= ordered.size()) return;
  const auto now = Clock::now();
  std::uint32_t cap = in_use;
  if (const RefusalHold* h = ActiveHold(index, now)) cap = std::min(cap, h->capacity);
  RefusalHold next{cap, now + kRefusalHold, 0};
  if (cluster) {
    if (index >= lease_caps.size()) return;
    next.applied = lease_caps[index].applied;  // ApplyLease keeps the floor
    holds[index] = next;
    ApplyLease(index);
  } else {
    // Never below one system and one action slot (the single-machine minimum,
    // less the reserve): a client reporting fake refusals must not close the
    // target for everyone.
    const config::TargetConfig& t = ordered[index]->config();
    next.capacity = std::max(next.capacity, std::min<std::uint32_t>(
                                                static_cast<std::uint32_t>(t.limit - t.reserve), 2));
    holds[index] = next;
    ApplySingleCapacity(index);
  }
  ArmHoldTimer(now + kRefusalHold);
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
                 t.name, unclean.who, tg.segment_name());
    return;
  }
  const std::uint32_t held_back = tg.HoldBackAfterUncleanEnd(slots, registrations, now);
  spdlog::warn("target {}: {} ended without a clean stop and segment {} is gone (machine "
               "restart?): up to {} session(s) of its clients may still be open on the server; "
               "{} slot(s){} held in quarantine for {} ms",
               t.name, unclean.who, tg.segment_name(), slots + registrations, held_back,
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
  // The folder is private (Open): nobody else can swap what is at `path`.
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
  if (!ec) {
    // Made 0660 by bind itself (no chmod by name afterwards). The umask is
    // the process's: Open runs before any thread of the broker starts.
    const mode_t old_mask = ::umask(0117);
    acceptor.bind(local_stream::endpoint(path.string()), ec);
    ::umask(old_mask);
  }
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return {Errc::kBrokerUnavailable, "cannot listen on " + path.string() + ": " + ec.message()};
  }
  // AT_SYMLINK_NOFOLLOW: never changes what a link points to.
  if (config.group && ::fchownat(AT_FDCWD, path.c_str(), static_cast<uid_t>(-1),
                                 config.group->gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return {Errc::kBrokerUnavailable, "cannot give socket " + path.string() + " to group " +
                                          config.group->name + ": " + std::strerror(errno)};
  }
  return Status::Ok();
}

void Broker::Impl::StartAccept() {
  if (!local) local = std::make_unique<LocalServer>(*this);
  local->Start();
}

void Broker::Impl::Shutdown() {
  if (stopping) return;
  stopping = true;
  NotifyServiceStopping("stopping");  // a Type=notify unit: stopping, not dead
  if (cluster) cluster->Stop();
  if (limits) limits->Stop();
  boost::system::error_code ec;
  if (local) local->Stop();
  acceptor.close(ec);
  std::error_code fec;
  std::filesystem::remove(config.socket, fec);
  grace_timer.cancel();
  quarantine_timer.cancel();
  audit_timer.cancel();
  hold_timer.cancel();
  log_flush_timer.cancel();
  FlushLimitedLogs(/*all=*/true);  // what the rate limit held back is counted in the log
  signals.cancel();
  bool any_held = !clients.empty();  // a registered client may take slots any time
  std::uint64_t slots_kept = 0;
  for (auto& [n, t] : targets) {
    const shm::Counts c = t->Counts();
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
    for (auto& [n, t] : targets) (void)t->RemoveSegment();
    if (state_path) {
      state.clean = true;
      if (Status st = WriteState(*state_path, state); !st.ok()) spdlog::error("{}", st.message());
    }
    for (InstanceLock& l : segment_locks) l.RemoveFile();
    owner_records.RemoveFile();  // lives as long as the segments
    spdlog::info("shutting down; nothing held, segments removed");
  }
  // Sessions end without reclaiming (stopping is set): running clients keep
  // their slots and re-register with the next broker.
  for (auto& [ptr, weak] : sessions) {
    if (auto s = weak.lock()) s->Close();
  }
  if (socket_lock) socket_lock->RemoveFile();
}

void Broker::Impl::UndoFailedOpen() {
  // A failed start handed nothing out (the socket never accepted a client), so
  // what it created goes; the next start then begins where this one did
  // (an unclean mark left by this start would hold capacity back for a quarantine).
  std::vector<std::string> removed;
  std::vector<std::string> kept;
  boost::system::error_code ec;
  std::error_code fec;
  if (acceptor.is_open()) {
    const auto bound = acceptor.local_endpoint(ec);
    acceptor.close(ec);
    // Only a socket this start bound (BindSocket refuses a live one of another broker).
    if (!bound.path().empty() && std::filesystem::remove(config.socket, fec)) {
      removed.push_back("socket " + config.socket.string());
    }
  }
  bool adopted_any = false;
  for (std::size_t i = 0; i < ordered.size(); ++i) {
    const std::string& name = ordered[i]->segment_name();
    if (ordered[i]->adopted_segment()) {
      // Clients of an earlier broker may hold its slots: the next broker adopts it.
      adopted_any = true;
      kept.push_back("segment " + name + " (adopted)");
    } else if (ordered[i]->RemoveSegment().ok()) {
      removed.push_back("segment " + name);
    }
  }
  if (state_path && state_lock && !previous_unclean && !adopted_any) {
    state.clean = true;
    if (Status st = WriteState(*state_path, state); !st.ok()) spdlog::error("{}", st.message());
  }
  // As in Shutdown: lock files after the state file, the socket's last; a
  // segment kept keeps its lock file, the state file's lock stays (as always).
  for (std::size_t i = 0; i < segment_locks.size(); ++i) {
    if (i >= ordered.size() || !ordered[i]->adopted_segment()) segment_locks[i].RemoveFile();
  }
  if (socket_lock) {
    socket_lock->RemoveFile();
    removed.push_back("lock file " + socket_lock->path().string());
  }
  // The socket's folders this start made, if empty now.
  for (const std::filesystem::path& f : RemoveCreatedFolders(created_socket_folders)) {
    removed.push_back("folder " + f.string());
  }
  std::string list;
  for (const std::string& r : removed) list += (list.empty() ? "" : ", ") + r;
  for (const std::string& k : kept) list += (list.empty() ? "kept " : ", kept ") + k;
  spdlog::info("start failed; undone: {}", list.empty() ? "nothing was created" : list);
}

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Broker::~Broker() = default;

Result<std::unique_ptr<Broker>> Broker::Create(config::BrokerConfig config) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  if (Status s = impl->Open(); !s.ok()) {
    impl->UndoFailedOpen();
    return s;
  }
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
  b.SaveOwnerRecords();  // before the first client: only the adopted segments' records
  b.ArmQuarantineTimer();
  b.ArmAuditTimer();
  b.ArmLogFlushTimer();
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

