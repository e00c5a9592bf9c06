// What `dsb-broker --check` verifies about the paths of a broker file, without
// creating or changing anything: the same rules the start applies
// (secure_fs.h), so a config that passes --check does not fail at start for
// a folder or file another user controls.
#ifndef DSB_BROKER_START_CHECKS_H_
#define DSB_BROKER_START_CHECKS_H_

#include "broker/config/broker_config.h"
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

}  // namespace dsb::broker

#endif  // DSB_BROKER_START_CHECKS_H_
