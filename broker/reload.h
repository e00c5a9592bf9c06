// SIGHUP: reopen the log file (logrotate) and reload the broker file.
//
// What a running broker applies, and why:
//   log_level     a level switch of the logger (atomic), nothing else depends on it.
//   log_file      reopened at the new path when the broker already logs to a file
//                 (the file sink switches its descriptor under its own mutex); from
//                 stderr to a file or back needs a restart: the logger's sinks cannot
//                 be swapped while other threads log.
//   admin_group   read by every write request (admin_rights.h); a removed member
//                 loses the right at its next request, already-made changes stay.
//   idle_timeout  read each time a connection's idle timer is armed; open
//                 connections take it at their next request.
// Everything else needs a restart and is logged at warn as changed but not applied:
// id, socket, shm_prefix and group (the socket and the segments exist with those
// names and modes), targets and the cluster file (the segments and leases are sized
// by them), max_clients (fitted under the file limit at start), max_unregistered and
// max_unregistered_per_uid (the admission table is sized at start), metrics and
// listen (bound sockets), key_file and state_dir (read at start), adopt_grace (only
// used at start).
//
// A file that fails any check of a start (start_checks.h ValidateForStart) changes
// nothing: the error is logged and the broker runs on as it was; the log file is
// still reopened (logrotate must not lose lines to a typo in the config).
#ifndef DSB_BROKER_RELOAD_H_
#define DSB_BROKER_RELOAD_H_

#include <string>
#include <vector>

#include "broker/config/broker_config.h"

namespace dsb::broker {

// The difference between the running config and a newly loaded one.
struct ReloadDiff {
  std::vector<std::string> applied;  // "log_level: info -> debug"
  std::vector<std::string> restart;  // "socket: /a -> /b", "targets"
  bool empty() const { return applied.empty() && restart.empty(); }
};

// Splits what differs between `running` and `next` into what a running broker
// applies and what needs a restart (the table above). Pure; both valid.
ReloadDiff DiffForReload(const config::BrokerConfig& running, const config::BrokerConfig& next);

// "a, b, c".
std::string JoinList(const std::vector<std::string>& items);

}  // namespace dsb::broker

#endif  // DSB_BROKER_RELOAD_H_
