// The broker file: one per broker process. Keys, defaults and ranges: docs/config.md.
//
//   [broker]
//   id = "ws1"
//   socket = "/tmp/dsb-ws1/dsb.sock"
//   shm_prefix = "ws1"
//
//   [[targets]]            # single-machine mode; in cluster mode targets come from
//   name = "exch01"        # the cluster file named by broker.cluster
//   limit = 32
#ifndef DSB_BROKER_CONFIG_BROKER_CONFIG_H_
#define DSB_BROKER_CONFIG_BROKER_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/config/cluster_config.h"
#include "common/account.h"
#include "common/status.h"

namespace dsb::config {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError };

// "trace", "debug", "info", "warn", "error".
const char* LogLevelName(LogLevel level);

// The group that socket and segments are made 0660 for, resolved at load time.
// On Windows a local or domain group name, resolved to its SID string (the
// pipe's and segments' security descriptors admit it).
struct GroupRef {
  std::string name;
  GroupId gid{};

  friend bool operator==(const GroupRef&, const GroupRef&) = default;
};

// A validated broker file. A value type; no thread rules.
// Every path in it is absolute (relative ones were resolved against the broker file's folder).
// Invariants:
//   1. targets is non-empty with unique names; in cluster mode it is a copy of cluster->targets.
//   2. cluster has a value exactly when cluster_file does; then key_file has a value and
//      cluster->FindBroker(id) != nullptr.
struct BrokerConfig {
  // The broker file it was loaded from, absolute (LoadBrokerConfig; empty
  // from ParseBrokerConfig): SIGHUP reads it again.
  std::filesystem::path file;
  std::string id;                           // [A-Za-z0-9._-]{1,64}
  std::filesystem::path socket;             // absolute, <= 107 bytes (sun_path); Windows: a
                                            // named pipe, default \\.\pipe\dsb-<id> (paths.h)
  std::string shm_prefix;                   // [A-Za-z0-9_-]{1,32}
  // segment_namespace: the kernel object namespace of the slot-table
  // segments (and of their queue mutex and waiter events, which follow the
  // segment). Windows: "global" (default) or "local". Global\ objects are
  // seen from every session, so a broker running as a service (session 0)
  // serves DigiScope in a user session; creating them needs
  // SeCreateGlobalPrivilege (services and administrators have it), so a
  // console broker under a plain account must set "local" (its clients then
  // must run in the same session). Linux has no such namespace: only
  // "local" (the default) is accepted there.
#ifdef _WIN32
  static constexpr bool kSegmentGlobalDefault = true;
#else
  static constexpr bool kSegmentGlobalDefault = false;
#endif
  bool segment_global = kSegmentGlobalDefault;
  std::optional<GroupRef> group;            // none: no group is given access
  // Members may use the write ops of the local socket (set_limit, ...; see
  // broker/admin_rights.h); none: only root and the broker's user may.
  std::optional<GroupRef> admin_group;
  LogLevel log_level = LogLevel::kInfo;
  std::optional<std::filesystem::path> log_file;  // none: log to stderr
  std::chrono::nanoseconds adopt_grace = std::chrono::seconds(5);
  int max_clients = 1024;           // 1..65535 registered clients
  // Local connections that have not registered (dsbctl, clients about to
  // register, any peer of the group): in all and per uid (1..4096, per uid <=
  // in all), and how long one may stay silent before it is closed.
  int max_unregistered = 64;
  int max_unregistered_per_uid = 16;
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(5);
  std::optional<HostPort> metrics;  // Prometheus endpoint
  std::optional<HostPort> listen;   // cluster TCP listener; in cluster mode defaults
                                    // to this broker's address in the cluster file
  std::optional<std::filesystem::path> cluster_file;
  std::optional<std::filesystem::path> key_file;
  std::optional<std::filesystem::path> state_dir;

  std::optional<ClusterConfig> cluster;  // cluster mode: the loaded cluster file
  std::vector<TargetConfig> targets;

  bool cluster_mode() const { return cluster.has_value(); }
  // This broker's entry in the cluster file. REQUIRES: cluster_mode().
  const ClusterBroker& self() const;
  const TargetConfig* FindTarget(std::string_view name) const;
  // The POSIX shared-memory name of a target's segment: "/dsb-<shm_prefix>-<target>".
  std::string SegmentName(std::string_view target_name) const;
  // What goes in front of shm::SegmentName(shm_prefix, target) for the name
  // the broker creates and tells its clients: "Global\\" with
  // segment_global, else "" (Windows: Local\, Linux: /dev/shm).
  std::string SegmentNamespacePrefix() const { return segment_global ? "Global\\" : ""; }
};

// Reads and validates a broker file; in cluster mode also the cluster file it names.
// Messages name the file as `file` was given. Relative paths inside are resolved against
// the absolute folder of `file`.
// Success: the validated config.
// Failure (Errc::kConfig): the file cannot be read, is not a regular file or is over 1 MiB;
//   a TOML syntax error ("<file>:<line>:<column>: ..."); an invalid value, a missing required
//   key or an unknown key ("<file>: <key path>: <reason>"); an unknown group; in cluster
//   mode any error of the cluster file (naming that file), this broker's id not listed there,
//   or [[targets]] present in the broker file. Nothing partial is returned.
Result<BrokerConfig> LoadBrokerConfig(const std::filesystem::path& file);

// As LoadBrokerConfig, on text already in memory. `file_name` is used only in messages;
// relative paths are resolved against `base_dir` (made absolute first).
Result<BrokerConfig> ParseBrokerConfig(std::string_view text, std::string_view file_name,
                                       const std::filesystem::path& base_dir);

}  // namespace dsb::config

#endif  // DSB_BROKER_CONFIG_BROKER_CONFIG_H_
