// The cluster file: the same file on every workstation. It lists the brokers that share
// each target's limit, the targets, and the lease timing (DESIGN.md section 7).
// Keys, defaults and ranges: docs/config.md.
#ifndef DSB_BROKER_CONFIG_CLUSTER_CONFIG_H_
#define DSB_BROKER_CONFIG_CLUSTER_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsb::config {

// "host:port" as written; an IPv6 host is written in brackets ("[::1]:7401") and stored
// without them. The host is not resolved here.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;

  // "host:port", with brackets around a host that contains ':'.
  std::string ToString() const;
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

// Parses "host:port". Success: host non-empty, port in [min_port, 65535].
// Failure (Errc::kConfig, message without file or key): no ':', empty host, spaces or
// control characters in the host, unbalanced brackets, a port that is not a number in range.
Result<HostPort> ParseHostPort(std::string_view text, std::uint16_t min_port);

// One target: a server account whose sessions count against one limit.
struct TargetConfig {
  std::string name;  // [A-Za-z0-9._-]{1,48}
  int limit = 0;     // L, 1..65535
  int reserve = 0;   // r, 0..limit-1: sessions left for other tools
  // How long a slot reclaimed from a dead client stays unusable (server may still hold
  // the session). 0 re-enables at once.
  std::chrono::nanoseconds quarantine{0};
  int slots = 0;  // slot-table size of the local segment; >= limit (default max(limit, 64))
  // A released slot stays unusable this long unless the client confirmed the
  // session's end (Permit::ReleaseConfirmed): the server may still count it. 0..1h.
  std::chrono::nanoseconds release_cooldown{0};
  // Limit discovery by feedback (DESIGN section 8): repeated session-limit
  // refusals lower the effective limit toward the server's real cap.
  bool discover = true;
  // After this long without a refusal, raise the effective limit by one (again
  // every period) back toward `limit`. 0 = never (the default).
  std::chrono::nanoseconds limit_increase_after{0};
  // A shell command that prints the server's cap (one integer); run at start
  // and every limit_poll, killed after limit_command_timeout. Empty: none.
  std::string limit_command;
  std::chrono::nanoseconds limit_poll = std::chrono::minutes(5);
  std::chrono::nanoseconds limit_command_timeout = std::chrono::seconds(10);

  friend bool operator==(const TargetConfig&, const TargetConfig&) = default;
};

// Fair-share weights the parser accepts: the coordinator keeps them in hundredths as
// integers 1..65535 (lease::kMaxWeight).
inline constexpr double kMinWeight = 0.01;
inline constexpr double kMaxWeight = 655.35;

// One broker as listed in the cluster file.
struct ClusterBroker {
  std::string id;        // same rules as [broker].id
  HostPort address;      // where its cluster listener is reached
  int system_slots = 1;  // DigiScope instances it may register, >= 1
  int floor = 0;         // action slots it may always use without a lease, >= 0
  double weight = 1.0;   // fair-share weight, kMinWeight..kMaxWeight
};

enum class LedgerKind { kEmbedded, kEtcd };

// With ledger = "etcd" a renew or a limit change writes every target's ledger key in one etcd
// transaction, guarded by a compare per key read: etcd 3.4 allows 128 operations per
// transaction (--max-txn-ops) and the limit keeper's transaction needs 2T + 3 of them.
inline constexpr std::size_t kMaxEtcdTargets = 60;

// [etcd_tls]: the files for https etcd endpoints (etcd's --client-cert-auth).
// Absolute paths; their readability is checked by `dsb-broker --check` and at
// start, not by the parser (the same cluster file serves every workstation).
struct EtcdTlsConfig {
  std::filesystem::path ca_file;    // PEM CA bundle that signs the members' certificates
  std::filesystem::path cert_file;  // this broker's client certificate (PEM)
  std::filesystem::path key_file;   // its private key (PEM)
  friend bool operator==(const EtcdTlsConfig&, const EtcdTlsConfig&) = default;
};

// A validated cluster file. A value type; no thread rules.
// Invariants (checked at parse time, relied on by Pool()):
//   1. brokers and targets are non-empty; broker ids, broker addresses and target names
//      are unique.
//   2. For every target t: SumSystemAndFloor() <= t.limit - t.reserve, so Pool(t) >= 0.
//   3. ledger == kEmbedded: coordinator names a listed broker, etcd_endpoints is empty,
//      etcd_tls is empty.
//      ledger == kEtcd: coordinator is empty, etcd_endpoints is non-empty, each
//      "http(s)://host:port" (optionally one trailing '/'); etcd_tls is set exactly when an
//      endpoint is https; etcd_prefix starts and ends with '/' and has no space or control
//      character.
//   4. ledger == kEtcd: targets.size() <= kMaxEtcdTargets.
struct ClusterConfig {
  std::string file_name;  // as given to the parser; used in messages
  // Lower-case hex SHA-256 of the exact file bytes: peers with a different file are refused.
  std::string hash;

  // R1: raised by the operator with every change of the file's content; a
  // coordinator that sees a newer generation steps down, brokers with an older
  // one are refused. 1..2^53.
  std::uint64_t generation = 1;

  LedgerKind ledger = LedgerKind::kEmbedded;
  std::string coordinator;                  // broker id holding the ledger (embedded only)
  std::vector<std::string> etcd_endpoints;  // etcd only; "http(s)://host:port"
  // etcd only: every key of this deployment lives under it, so one etcd cluster can serve
  // several dsb deployments.
  std::string etcd_prefix = "/dsb/";
  // etcd only: the deadline of one etcd call (a write not answered by then is unknown).
  std::chrono::nanoseconds etcd_timeout = std::chrono::seconds(2);
  std::optional<EtcdTlsConfig> etcd_tls;  // required with an https endpoint
  std::chrono::nanoseconds term = std::chrono::seconds(15);    // D
  std::chrono::nanoseconds drain = std::chrono::seconds(120);  // H
  double eps = 0.001;                                          // clock drift allowance

  std::vector<ClusterBroker> brokers;
  std::vector<TargetConfig> targets;

  // The broker or target of that id/name, or nullptr.
  const ClusterBroker* FindBroker(std::string_view id) const;
  const TargetConfig* FindTarget(std::string_view name) const;
  // sum over brokers of system_slots + floor.
  int SumSystemAndFloor() const;
  // The pool shared by leases: limit - reserve - SumSystemAndFloor() (>= 0 by invariant 2).
  int Pool(const TargetConfig& target) const;
  // The broker ids in file order, joined with ", " (for messages).
  std::string BrokerIds() const;
};

// Reads and validates a cluster file. The messages name the file as `file` was given.
// Success: the validated config, hash over the bytes read.
// Failure (Errc::kConfig): the file cannot be read, is not a regular file or is over 1 MiB;
//   a TOML syntax error (message "<file>:<line>:<column>: ..."); any invalid value or
//   unknown key (message "<file>: <key path>: <reason>"). Nothing partial is returned.
Result<ClusterConfig> LoadClusterConfig(const std::filesystem::path& file);

// As LoadClusterConfig, on text already in memory; `file_name` is used only in messages.
Result<ClusterConfig> ParseClusterConfig(std::string_view text, std::string_view file_name);

// Lower-case hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);

}  // namespace dsb::config

#endif  // DSB_BROKER_CONFIG_CLUSTER_CONFIG_H_
