// The broker's clean stop (a signal or Broker::Stop): stops the cluster node,
// the limit keeper, the socket and the timers; removes the segments and marks
// the state file clean if nothing is held, else keeps them for the next broker
// to adopt; closes the sessions without reclaiming their slots.
#include "broker/broker_impl.h"
#include "broker/config/paths.h"
#include "broker/service/service_notify.h"
#include "common/limited_log.h"

namespace dsb::broker {

void Broker::Impl::Shutdown() {
  if (stopping) return;
  stopping = true;
  NotifyServiceStopping("stopping");  // a Type=notify unit: stopping, not dead
  if (cluster) cluster->Stop();
  if (limits) limits->Stop();
  boost::system::error_code ec;
  if (local) local->Stop();
  if (status_page) status_page->Stop();
  if (http) http->Stop();
  acceptor.close(ec);
  std::error_code fec;
  // A named pipe goes with its last handle; there is no file to remove.
  if (!config::IsNamedPipePath(config.socket)) std::filesystem::remove(config.socket, fec);
  grace_timer.cancel();
  quarantine_timer.cancel();
  audit_timer.cancel();
  hold_timer.cancel();
  log_flush_timer.cancel();
  FlushLimitedLogs(/*all=*/true);  // what the rate limit held back is counted in the log
  control.Cancel();
  bool any_held = !clients.empty();  // a registered client may take slots any time
  std::uint64_t slots_kept = 0;
  for (auto& [n, t] : targets) {
    const shm::Counts c = t->Counts();
    // Cooling slots too: the server may still count their sessions.
    const std::uint64_t kept = c.held_action + c.held_system + c.quarantined + c.cooling;
    slots_kept += kept;
    if (kept > 0 ||
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

}  // namespace dsb::broker
