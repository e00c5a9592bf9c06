// What `dsb-broker --check` verifies about the paths of a broker file, without
// creating or changing anything: the same rules the start applies
// (secure_fs.h), so a config that passes --check does not fail at start for
// a folder or file another user controls.
#ifndef DSB_BROKER_START_CHECKS_H_
#define DSB_BROKER_START_CHECKS_H_

#include "broker/config/broker_config.h"
#include "broker/file_limit.h"
#include "common/status.h"

namespace dsb::broker {

// Checks, in order: the socket's folder (private, or creatable as private;
// a file there is refused), the socket path (missing or a socket), state_dir
// (as the socket's folder), log_file (its folder as state_dir; the file
// missing or a regular file of root or the broker, not a folder or link),
// and in cluster mode the key file (CheckOperatorFile kSecret via
// wire::ClusterKey::LoadFile: owner, mode, contents).
// Success: Ok. Failure: kConfig naming the key ("broker.state_dir /x is a
// file, not a folder") and what to do; the first failure only.
Status CheckStartPaths(const config::BrokerConfig& config);

// The operator's files the broker runs from: `broker_file` and, in cluster
// mode, the cluster file. Each must be a regular file owned by root or the
// broker's effective uid and writable by nobody else (CheckOperatorFile,
// kConfig). Run by the broker (start and --check), not by the config
// loader: dsbctl reads the same files as another user.
// Failure: kConfig "<file>: config file is owned by uid N (name) ...; run
// `chown ...`" or "<file>: config file has mode 0666: group or others may
// change it ...; run `chmod 600 <file>`".
Status CheckOperatorFiles(const std::filesystem::path& broker_file,
                          const config::BrokerConfig& config);

// What a start checks about the cluster mode before it changes anything:
// the ledger kind this build implements (ledger = "etcd" is not), the listen
// address an IP address and its port free (or held by this config's running
// broker: its socket answers; only with `probe_ports`), the epoch counter and
// the coordinator marks in state_dir well-formed and the state file readable;
// the operator's state files in state_dir sound (<id>.limits in single mode
// and on the coordinator, <id>.modes on the coordinator: CheckLimitsFile,
// CheckModesFile; a damaged one is refused, never ignored); broker.metrics
// an IP address or "localhost" and (only with `probe_ports`) its port free.
// Success: Ok (also outside cluster mode, then only state_dir and metrics).
// Failure: kConfig naming the file or key and what to do; the first only.
Status CheckClusterStart(const config::BrokerConfig& config, bool probe_ports);

// A broker file checked as a start checks it, before anything is created.
struct StartPlan {
  config::BrokerConfig config;
  FileBudget budget;  // max_clients fitted under the file limit
};

// Everything a start validates before it changes anything, in one place so
// `dsb-broker --check` and the start cannot drift: LoadBrokerConfig,
// CheckOperatorFiles, FitFileLimit (raising the soft limit where allowed),
// CheckStartPaths, CheckClusterStart. `probe_ports`: --check binds the
// listen port once to see it is free; the start does not (it binds it for
// real moments later, and a failure there is undone and named the same way).
// Success: the config and its file budget. Failure: kConfig, the message
// naming the file or key (prefixed with `file` where the check's own message
// does not name it).
Result<StartPlan> ValidateForStart(const std::filesystem::path& file, bool probe_ports);

}  // namespace dsb::broker

#endif  // DSB_BROKER_START_CHECKS_H_
