// The discovered limit (DESIGN section 8) with the ledger in etcd: what is
// stored beside the shared ledger (broker/lease/shared_ledger.h), and the
// keeper's bound on what dsb held at a refusal. Pure: no I/O, no clock reads
// (every call that needs a time takes it).
//
// With `ledger = "etcd"` there is no coordinator to run the LimitKeeper. One
// broker instance at a time is the *limit keeper* (broker/etcd/etcd_limits.h):
// it holds kKeeperKey on an etcd lease of its own, runs the LimitKeeper
// (discovery, limit_command) and writes every change, with the ledger's limit
// (lease::ApplyAdmin kSetLimit), in one compare-and-swap transaction guarded
// by its keeper key. The other brokers put their refusal reports under
// kRefusalKeyPrefix on their own etcd lease; the keeper claims (deletes) and
// processes them. An operator's set-limit is written by whichever broker got
// the request, the same way; the keeper re-reads the record it did not write.
//
// Keys (suffixes below the deployment's prefix, beside shared_ledger.h's):
//   kKeeperKey            the keeper's KeeperValue, on the keeper's etcd lease
//   LimitKey(target)      one StoredLimit per target: the effective limit, its
//                         source, base, when and why it changed (the truth a
//                         new keeper starts from: never the configured limit
//                         when a lower one is stored, S)
//   RefusalKey(who, seq)  one StoredRefusal, on the reporter's etcd lease
// Values are versioned JSON ({"v": 1, ...}); a value that does not parse is
// kProtocol naming the key.
//
// Thread rule: value types and free functions; OwedHistory is not
// thread-safe (the keeper's strand).
#ifndef DSB_BROKER_ETCD_LIMIT_RECORDS_H_
#define DSB_BROKER_ETCD_LIMIT_RECORDS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/lease/ledger.h"
#include "broker/lease/limit_policy.h"
#include "common/status.h"

namespace dsb::etcd {

inline constexpr std::string_view kKeeperKey = "limits/keeper";
inline constexpr std::string_view kLimitKeyPrefix = "limits/target/";
inline constexpr std::string_view kRefusalKeyPrefix = "refusal/";

// "limits/target/<name>".
std::string LimitKey(std::string_view target);

// The broker instance that keeps the limits (R0 names an instance).
struct KeeperValue {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t instance = 0;
  bool operator==(const KeeperValue&) const = default;
};
std::string EncodeKeeper(const KeeperValue& keeper);
// Failure: kProtocol naming kKeeperKey.
Result<KeeperValue> DecodeKeeper(std::string_view text);

// One change of a target's limit as shown by `dsbctl status`.
struct StoredChange {
  std::int64_t at_unix_ms = 0;  // the writer's wall clock: display only
  std::uint32_t from = 0;
  std::uint32_t to = 0;
  lease::LimitSource source = lease::LimitSource::kConfig;
  std::string cause;
  std::string who;  // the operator or reporter; "" for a query or a tick
};

// A target's effective limit as the keeper (or an operator's broker) wrote it.
struct StoredLimit {
  std::uint32_t limit = 0;
  lease::LimitSource source = lease::LimitSource::kConfig;
  std::uint32_t base = 0;  // what the limit returns to (LimitPolicy Q1)
  lease::LimitSource base_source = lease::LimitSource::kConfig;
  std::int64_t changed_at_unix_ms = 0;  // display only
  std::string writer;                   // broker id that wrote it
  std::vector<StoredChange> recent;     // newest first, at most kRecentChanges
  static constexpr std::size_t kRecentChanges = 10;
};
std::string EncodeLimit(const StoredLimit& limit);
// Failure: kProtocol naming `key` and what is wrong (limit or base outside
// 1..65535, an unknown source, not the JSON EncodeLimit writes).
Result<StoredLimit> DecodeLimit(std::string_view key, std::string_view text);
// `record` after `change` (at `at_unix_ms` by `who`, written by `writer`):
// the new limit and source, `base`/`base_source` as given, the change first
// in `recent` (trimmed to kRecentChanges).
StoredLimit WithChange(StoredLimit record, const lease::LimitChange& change, std::uint32_t base,
                       lease::LimitSource base_source, std::int64_t at_unix_ms,
                       const std::string& who, const std::string& writer);

// A refusal report of one broker instance (DESIGN section 8, F1): `held` is
// what that broker held of the target at the refusal (its registrations'
// system slots + action slots, the refused attempt not counted).
struct StoredRefusal {
  std::string target;
  std::uint32_t held = 0;
  std::uint32_t refusals = 1;
};
struct RefusalName {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t instance = 0;
  std::uint64_t seq = 0;
};
// "refusal/<broker>/<epoch>/<instance>/<seq>" (decimal numbers).
std::string RefusalKey(const RefusalName& name);
// The name a refusal key suffix carries; nullopt for any other text.
std::optional<RefusalName> ParseRefusalKey(std::string_view suffix);
std::string EncodeRefusal(const StoredRefusal& refusal);
// Failure: kProtocol naming `key` (held outside 0..65535, refusals 0 or
// above 65535, empty target).
Result<StoredRefusal> DecodeRefusal(std::string_view key, std::string_view text);

// Each broker's owed per target over the recent past, as the keeper saw it in
// the snapshots it read (lease::SnapshotOf). Owed falls when a report arrives
// (C1) or by silence (C2); a refusal report in flight meanwhile describes the
// moment before the fall, so the bound takes the peak within `horizon` (as
// lease::RecentOwed does for the embedded coordinator). A fall the keeper
// observes late only keeps the old value longer (a higher bound). A rise and
// fall both between two reads are missed: that can only make the bound lower
// than what dsb held, i.e. the limit lower than needed (a wasted slot, never
// a broken S). Nothing is known before the first Observe + horizon: until
// then Covers() is false and no refusal is evidence (a new keeper).
class OwedHistory {
 public:
  explicit OwedHistory(lease::Duration horizon) : horizon_(horizon) {}
  void Observe(const lease::LedgerSnapshot& snapshot, lease::TimePoint now);
  // The most `broker` was owed for `target` within the horizon before the
  // last Observe (0 for one never seen).
  std::uint32_t Peak(const std::string& target, const std::string& broker,
                     lease::TimePoint now) const;
  // The sum of Peak over every broker seen for `target` but `except`.
  std::uint64_t SumOfPeaks(const std::string& target, const std::string& except,
                           lease::TimePoint now) const;
  // True once history reaches back a full horizon before `now`.
  bool Covers(lease::TimePoint now) const;

 private:
  struct Entry {
    std::uint32_t last = 0;
    std::vector<std::pair<lease::TimePoint, std::uint32_t>> falls;
  };
  lease::Duration horizon_;
  std::optional<lease::TimePoint> first_;
  std::map<std::pair<std::string, std::string>, Entry> owed_;  // (target, broker)
};

// The keeper's upper bound of what dsb held on the account of `target` when
// `reporter` was refused (DESIGN section 8, F1; account_held.h for the
// embedded coordinator): the reporter's own count plus, for every other
// broker, its allowance (system_slots + floor of `mine`'s brokers; for a
// broker of the stored ledger that is not in `mine`, what the ledger counts
// for it) and its peak owed. UINT32_MAX (never evidence) while the stored
// ledger is learning (`learning`: the store's learning key, or the
// snapshot's own flag; owed then misses the grants of before), while the
// history does not cover the horizon, or for a target the snapshot lacks.
// REQUIRES: history.Observe(snapshot, now) just before.
std::uint32_t HeldAtRefusal(const lease::LedgerConfig& mine, const lease::LedgerSnapshot& snapshot,
                            bool learning, const OwedHistory& history, const std::string& target,
                            const std::string& reporter, std::uint32_t reporter_count,
                            lease::TimePoint now);

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_LIMIT_RECORDS_H_
