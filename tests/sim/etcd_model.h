// A model of etcd v3 for the deterministic simulation's etcd mode (issue 13):
// what the ledger in etcd relies on, and what it must survive.
//
// Modelled:
//   - A linearizable key-value store with one global revision: every
//     committed write (a transaction, a lease grant's key, an expiry) bumps
//     it; every key carries create_revision, mod_revision, version and the
//     lease it is attached to. A transaction compares keys (equality on
//     mod_revision, create_revision or lease) and applies its puts and deletes
//     atomically, or nothing.
//   - Leases with a TTL in whole seconds (>= kMinTtlSeconds, as etcd raises a
//     smaller one), measured on the CURRENT LEADER's clock: the caller passes
//     the leader's local time. KeepAlive resets a lease to its full TTL.
//     An expired lease deletes its keys (one revision).
//   - Leader changes (ElectLeader): every lease is reset to its full TTL on
//     the new leader's clock, as etcd's lessor does when it is promoted.
//   - No leader (LoseLeader, i.e. the leader died or quorum is lost): nothing
//     expires and no write is possible. The caller (tests/sim) decides what
//     happens to calls meanwhile: writes wait and may commit after the next
//     election (a timed-out write is not a failed one); reads and keepalives
//     time out. Until `stale_until` the deposed leader, cut off from the
//     majority, still answers keepalives from its own (discarded) lessor
//     (StaleKeepAlive): etcd's leader-local lease renewal.
//   - Wipe: the cluster's data lost (rebuilt empty): no keys, no leases.
// Not modelled: watches (the simulation sends the watch's "renew now" as a
// message), compaction, members' disks, per-member reads (every read is
// linearizable: served by the leader).
//
// Pure: no clock reads, no randomness; the caller passes the leader's local
// time. Thread rule: single-threaded.
#ifndef DSB_TESTS_SIM_ETCD_MODEL_H_
#define DSB_TESTS_SIM_ETCD_MODEL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dsb::sim {

inline constexpr std::int64_t kMinTtlSeconds = 2;

struct StoredKey {
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;  // 0 = none
};

// One compare of a transaction: key's field == value. For an absent key every
// field reads 0 (so "create_revision == 0" means "absent").
struct EtcdCompare {
  enum class Field { kModRevision, kCreateRevision, kLease };
  std::string key;
  Field field = Field::kModRevision;
  std::int64_t value = 0;
};

struct EtcdOp {
  bool put = true;  // false: delete
  std::string key;
  std::string value;
  std::int64_t lease = 0;
};

struct EtcdTxn {
  std::vector<EtcdCompare> compares;
  std::vector<EtcdOp> success;  // applied when every compare holds
};

struct EtcdTxnResult {
  bool succeeded = false;
  // Set when the transaction names a lease that does not exist (etcd's
  // "requested lease not found"): nothing applied.
  bool lease_not_found = false;
  std::int64_t revision = 0;
};

struct EtcdRange {
  std::int64_t revision = 0;
  std::map<std::string, StoredKey> kvs;
};

class EtcdModel {
 public:
  // A healthy, empty cluster with a leader.
  EtcdModel() = default;

  bool has_leader() const { return has_leader_; }
  std::int64_t revision() const { return revision_; }

  // The leader is gone (killed, cut off, quorum lost). Nothing expires and
  // nothing is written until ElectLeader.
  void LoseLeader();
  // A new leader whose clock reads `leader_now`: every lease is reset to its
  // full TTL from now. REQUIRES: !has_leader().
  void ElectLeader(std::int64_t leader_now);
  // Every key and lease lost (the cluster rebuilt empty); the leader stays.
  void Wipe();

  // Writes and linearizable reads. REQUIRES: has_leader(); `leader_now` is the
  // leader's clock (never decreasing while it leads).
  // LeaseGrant: a new lease id; TTL below kMinTtlSeconds is raised to it.
  std::int64_t LeaseGrant(std::int64_t leader_now, std::int64_t ttl_seconds);
  // The TTL in seconds (the lease's full TTL, reset from now), or nullopt if
  // the lease does not exist (expired or never granted).
  std::optional<std::int64_t> KeepAlive(std::int64_t leader_now, std::int64_t lease);
  EtcdRange Range() const;
  EtcdTxnResult Txn(const EtcdTxn& txn);

  // The leader's local time of the earliest lease expiry, or nullopt (no
  // leader, or no lease).
  std::optional<std::int64_t> NextExpiry() const;
  // Expires every lease due at `leader_now` (deleting its keys) and returns
  // the keys deleted. Nothing without a leader.
  std::vector<std::string> ExpireDue(std::int64_t leader_now);

  // Introspection for tests and logs.
  bool LeaseExists(std::int64_t lease) const { return leases_.count(lease) != 0; }
  const std::map<std::string, StoredKey>& kvs() const { return kvs_; }

 private:
  struct Lease {
    std::int64_t ttl_ns = 0;
    std::int64_t expires_at = 0;  // on the current leader's clock
  };

  bool has_leader_ = true;
  std::int64_t revision_ = 1;  // etcd starts at 1
  std::int64_t next_lease_ = 0x1000;
  std::map<std::string, StoredKey> kvs_;
  std::map<std::int64_t, Lease> leases_;
};

}  // namespace dsb::sim

#endif  // DSB_TESTS_SIM_ETCD_MODEL_H_
