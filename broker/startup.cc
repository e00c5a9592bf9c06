// The broker's start: Open() runs the steps in order: TakeLocks (socket,
// state file, every segment), StartLimitKeeper (single mode), WriteStartState
// (the capacity high water, before any segment is touched), OpenTargets (each
// target's first capacity: the limit keeper's in single mode, the floor in
// cluster mode; segments opened or adopted), the cluster node,
// LoadOwnerRecords, BindSocket; UndoFailedOpen() removes what a failed start
// made. What the state file means for the start (an unclean end, the
// capacity high water) is in state_policy.cc.
#include "broker/broker_impl.h"

#include "broker/config/paths.h"
#include "common/account.h"

namespace dsb::broker {

Status Broker::Impl::Open() {
  // Lock before touching anything: a second broker with an overlapping config
  // must not attach to, bump, re-shape or free a running broker's segments,
  // nor write this broker's state file.
  std::optional<UncleanEnd> unclean;
  if (Status st = TakeLocks(&unclean); !st.ok()) return st;
  // Before any segment is touched: a port in use ends the start early.
  if (Status st = BindMetrics(); !st.ok()) return st;
  if (!config.cluster_mode()) {
    // Before any segment is opened: the effective limits decide the first capacity.
    if (Status st = StartLimitKeeper(); !st.ok()) return st;
  }
  if (Status st = WriteStartState(unclean); !st.ok()) return st;
  if (Status st = OpenTargets(unclean, Clock::now()); !st.ok()) return st;
  if (config.cluster_mode()) {
    auto node = ClusterNode::Create(io, config, ClusterHooks());
    if (!node.ok()) return node.status();
    cluster = std::move(node).value();
  }
  // Before the socket accepts anyone: who registered the owners of the
  // adopted segments (only they may adopt them).
  LoadOwnerRecords();
  // The state file is written clean by Run once the start succeeded (a failed
  // start leaves it as the previous broker wrote it, for the segments it keeps).
  if (Status s = BindSocket(); !s.ok()) return s;
  return cluster ? cluster->Start() : Status::Ok();
}

Status Broker::Impl::TakeLocks(std::optional<UncleanEnd>* unclean) {
  const std::optional<GroupId> group =
      config.group ? std::optional<GroupId>(config.group->gid) : std::nullopt;
  // The socket's folder holds the socket and its lock: only this broker may
  // write it, or another user could swap the socket (secure_fs.h). Clients
  // of the group need to search it. A named pipe (Windows) is in no folder:
  // its lock goes to the lock folder (InstanceLock::Beside).
  if (Status st = config::IsNamedPipePath(config.socket)
                      ? Status::Ok()
                      : EnsurePrivateFolder(config.socket.parent_path(), "broker.socket's folder",
                                            {.mode = mode_t(group ? 0750 : 0755), .group = group},
                                            &created_socket_folders);
      !st.ok()) {
    return st;
  }
  auto sock_lock = InstanceLock::Acquire(InstanceLock::Beside(config.socket),
                                         "socket " + config.socket.string());
  if (!sock_lock.ok()) return sock_lock.status();
  socket_lock.emplace(std::move(sock_lock).value());
  if (Status st = OpenState(unclean); !st.ok()) return st;
  // Set at once: a start that fails from here on must not mark the state
  // file clean over an earlier unclean end (UndoFailedOpen reads it).
  previous_unclean = unclean->has_value();
  for (const config::TargetConfig& t : config.targets) {
    const std::string segment =
        config.SegmentNamespacePrefix() + shm::SegmentName(config.shm_prefix, t.name);
    auto seg_lock = InstanceLock::Acquire(InstanceLock::ForSegment(segment),
                                          "segment " + segment + " (target " + t.name + ")");
    if (!seg_lock.ok()) return seg_lock.status();
    segment_locks.push_back(std::move(seg_lock).value());
  }
  return Status::Ok();
}

Status Broker::Impl::StartLimitKeeper() {
  // The effective limits, restored from the state_dir if an earlier life recorded them.
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
  return Status::Ok();
}

std::size_t Broker::Impl::ConfigIndex(const config::TargetConfig& t) const {
  return static_cast<std::size_t>(&t - config.targets.data());
}

std::uint32_t Broker::Impl::InitialCapacity(const config::TargetConfig& t) const {
  if (config.cluster_mode()) return static_cast<std::uint32_t>(config.self().floor);  // B1
  const std::uint32_t limit = limits->limit(ConfigIndex(t));
  const auto reserve = static_cast<std::uint32_t>(t.reserve);
  return limit > reserve ? limit - reserve : 0;
}

Status Broker::Impl::WriteStartState(const std::optional<UncleanEnd>& unclean) {
  if (!state_path) return Status::Ok();
  // Written before any segment is touched: what this life may hand out is
  // on disk before a client can use it. After an unclean end the earlier
  // high water is carried on (sessions of that life may still be open).
  state.pid = CurrentProcessId();
  state.clean = false;
  for (const config::TargetConfig& t : config.targets) {
    state.capacity_high_water[t.name] =
        std::max(InitialCapacity(t), unclean ? unclean->For(t) : 0);
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
  return Status::Ok();
}

Status Broker::Impl::OpenTargets(const std::optional<UncleanEnd>& unclean,
                                 Clock::time_point now) {
  for (const config::TargetConfig& t : config.targets) {
    const std::uint32_t capacity = InitialCapacity(t);
    // Single mode without a recorded limit: an adopted segment is not raised
    // above the capacity the previous broker left (its effective limit may
    // have been discovered or set by an operator: raising it to the config
    // would send clients into refusals until rediscovered).
    const bool keep_lower = !config.cluster_mode() && !limits->restored(ConfigIndex(t));
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
      limits->Seed(ConfigIndex(t), tg.capacity() + static_cast<std::uint32_t>(t.reserve),
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
  return Status::Ok();
}

void Broker::Impl::LoadOwnerRecords() {
  // Records of other segment instances than the adopted ones are dropped.
  std::map<std::string, std::uint64_t> adopted_instances;
  for (const auto& [n, t] : targets) {
    if (t->adopted_segment()) adopted_instances[n] = t->instance_id();
  }
  // A named pipe (Windows) is in no folder: its records go to the private
  // lock folder, beside the pipe's lock (InstanceLock::Beside).
  const std::filesystem::path records =
      config::IsNamedPipePath(config.socket)
          ? config::DefaultPaths().lock_dir / (config.socket.filename().string() + ".owners")
          : OwnerRecords::Beside(config.socket);
  if (Status st = owner_records.Load(records, adopted_instances); !st.ok()) {
    spdlog::warn("{}; no owner is recorded, so only root or the broker's user may re-adopt the "
                 "previous broker's owners (other clients register anew)",
                 st.message());
  } else if (!adopted_instances.empty()) {
    spdlog::info("{} owner(s) of the previous broker recorded with the uid that registered them",
                 owner_records.size());
  }
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
#ifdef _WIN32
    // The pipe goes with its last handle: closing it is the removal.
    acceptor.close(ec);
    removed.push_back("pipe " + config.socket.string());
#else
    const auto bound = acceptor.local_endpoint(ec);
    acceptor.close(ec);
    // Only a socket this start bound (BindSocket refuses a live one of another broker).
    if (!bound.path().empty() && std::filesystem::remove(config.socket, fec)) {
      removed.push_back("socket " + config.socket.string());
    }
#endif
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

}  // namespace dsb::broker
