// SharedLedger: the lease ledger (ledger.h, rules C1-C3, R0-R5) kept in a
// linearizable key-value store with leases (etcd v3) instead of in one
// coordinator's memory, so that any broker can apply the rules by a
// compare-and-swap transaction and no broker is a single point of
// coordination (DESIGN section 7, "For high availability").
//
// This file is pure: no I/O, no clock reads. The caller (broker/etcd/
// etcd_ledger.h in the broker; the etcd model in tests/sim) reads every key
// under the deployment's prefix at ONE store revision into a StoreView, calls
// one Apply* function, and writes the result back with a transaction that
// compares the mod_revision of every ledger key it read (create_revision 0
// for one that was absent) and that its own liveness key still exists with
// its own store lease. A failed compare means another broker wrote first:
// read again and redo. A write whose outcome is unknown (timeout) is never
// assumed failed: read again and redo the same request; the ledger answers an
// exact duplicate of an instance's newest request with the stored reply (and
// changes nothing), so a write that did commit is found, not repeated.
//
// How the rules map (the difference to the embedded coordinator is only
// WHOSE CLOCK measures silence and learning):
//   Liveness (C2)  Each broker instance (broker id, epoch, instance id) keeps
//                  the key LiveKey(...) on a store lease of its own with TTL
//                  >= Silence() = (D + H)(1 + eps), kept alive (one keepalive)
//                  after the request is first sent and before its transaction.
//                  An instance whose live key is absent at the revision read
//                  is silent: its owed falls to 0 and it is forgotten (C2).
//                  Sound because the store expires a lease only >= TTL after
//                  its last keepalive, which came after t_sent of every grant
//                  the instance applied (B1: those leases lapsed, H: slots
//                  back); a leader change only resets TTLs upward, and without
//                  quorum nothing expires and nothing is written.
//   C3 (learning)  A ledger created in the store (none there yet: first start,
//                  or a wiped store) or rebuilt for a newer generation (R3)
//                  starts learning: the caller puts kLearningKey on a store
//                  lease with TTL >= Silence() (write.start_learning). While
//                  the key exists every request gets Grant{learning = true}.
//   B1             Never here: every broker still counts its lease on its own
//                  monotonic clock from t_sent (lease::LeaseAgent), whatever
//                  the store's leases do.
//   R1/R3          The ledger's cluster file (config, generation, hash) is
//                  stored in the meta key. A request of an older generation or
//                  of another file at the same generation gets the verdicts of
//                  ledger.h. A request of a NEWER generation, whose sender's
//                  own config is passed as `mine`, replaces the stored config:
//                  a new Ledger of `mine` adopts the old one's acceptance
//                  Records() (R2), keeps every stored limit that is below
//                  the one `mine` gives (a discovered or operator limit: the
//                  server did not change with the file; never below the new
//                  file's reserved base) and starts learning (C3), exactly what the
//                  embedded coordinator of generation g+1 does after g confirmed
//                  its stop -- the compare-and-swap is that confirmation: the
//                  old ledger can never grant again.
//   Admin          revoke, drain, undrain, revoke one target, forced revoke,
//                  set-limit: the same Ledger calls, by transaction, and only
//                  from a broker running the stored ledger's file (same
//                  generation and hash): a limit keeper or an operator on an
//                  older file must not undo a limit a newer file lowered. No
//                  limit rises above the stored file's configured limit (the
//                  ceiling, Ledger::SetLimit).
//   Rollback       Every write raises the meta key's sequence number
//                  (StoredSequence). A store that went back in time (restored
//                  from a backup) shows a lower one than a broker saw before:
//                  its ledger may owe less than brokers hold, so the broker
//                  refuses to apply grants and writes RestartLearning (C3).
//
// Keys (suffixes below the deployment's prefix, e.g. "/dsb/<deployment>/"):
//   kMetaKey              ledger-wide state, the ledger's cluster file and
//                         the write sequence number "seq"
//   TargetKey(name)       one per target: its pool and limit, and per instance
//                         its report and grant amounts for that target
//   kLearningKey          present while learning (C3), on a store lease
//   LiveKey(id, e, i)     one per live broker instance, on that instance's
//                         store lease; the value is informational (host, pid)
// Values are JSON text, versioned ({"v": 1, ...}); a value that does not parse
// is kProtocol naming the key (never undefined behaviour, never a guess).
// Any other key under the prefix (ClassifyKey: kOther; e.g. a stray key, or a
// nested deployment's keys) is no ledger key: never loaded, never written.
//
// Thread rule: value types and free functions; no shared state.
#ifndef DSB_BROKER_LEASE_SHARED_LEDGER_H_
#define DSB_BROKER_LEASE_SHARED_LEDGER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "broker/lease/ledger.h"
#include "broker/lease/messages.h"
#include "common/status.h"

namespace dsb::lease {

inline constexpr std::string_view kMetaKey = "ledger/meta";
inline constexpr std::string_view kTargetKeyPrefix = "ledger/target/";
inline constexpr std::string_view kLearningKey = "ledger/learning";
inline constexpr std::string_view kLiveKeyPrefix = "live/";

// "ledger/target/<name>".
std::string TargetKey(std::string_view target);

// What a key under the prefix is, by its exact shape (the broker's reads, the
// limits code and this file share it):
//   kMeta      exactly kMetaKey
//   kTarget    "ledger/target/<name>", <name> a valid target name of the
//              cluster file (1-48 of [A-Za-z0-9._-]; so no '/')
//   kLearning  exactly kLearningKey
//   kLive      "live/<broker id>/<n>/<n>" as ParseLiveKey reads it
//   kOther     anything else (a stray key, a nested prefix's keys): the caller
//              leaves it out of the StoreView and out of its compares.
enum class KeyKind { kMeta, kTarget, kLearning, kLive, kOther };
KeyKind ClassifyKey(std::string_view suffix);
// True for a valid target name (the cluster file's rule, see kTarget).
bool IsTargetName(std::string_view name);

// One broker instance (R0) as its liveness key names it.
struct LiveInstance {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t instance = 0;
  auto operator<=>(const LiveInstance&) const = default;
};

// "live/<broker id>/<epoch>/<instance>" (decimal numbers). Broker ids are the
// cluster file's ([A-Za-z0-9._-], no '/').
std::string LiveKey(const LiveInstance& who);
// The instance a live key names, or nullopt for any other text.
std::optional<LiveInstance> ParseLiveKey(std::string_view suffix);

// Everything under the prefix, read at one store revision.
struct StoreView {
  // Ledger keys present (kMeta and kTarget keys only): suffix -> value.
  // Empty: no ledger in the store yet. A target key whose name the stored
  // config does not list is ignored (never breaks a step); a write deletes it
  // (StoreWrite::deletes), so a caller that passes one compares it like every
  // other key read; the caller may instead leave such keys out of `values`
  // and out of its compares (then it must pass every target key of the
  // stored config and of its own, which a generation step may create).
  std::map<std::string, std::string> values;
  std::set<LiveInstance> live;  // instances whose live key exists
  bool learning = false;        // kLearningKey exists
};

// What to write back (in one transaction guarded as the file comment says).
struct StoreWrite {
  // Ledger keys whose value changed (suffix -> new value). Empty and no
  // start_learning: nothing to write (e.g. a stale request; only the
  // keepalive mattered). A write that is not empty always puts kMetaKey, with
  // the sequence number one above the one read (StoredSequence).
  std::map<std::string, std::string> puts;
  // Ledger keys to delete (a target no longer in the stored config).
  std::vector<std::string> deletes;
  // Put kLearningKey on a new store lease with TTL >= silence (C3).
  bool start_learning = false;
  // Loud events and notices of this step (Ledger::TakeWarnings/TakeNotices),
  // for the caller's log once the write committed.
  std::vector<std::string> warnings;
  std::vector<std::string> notices;
  bool empty() const { return puts.empty() && deletes.empty() && !start_learning; }
};

// The result of one step: what to write and what to answer.
struct RenewStep {
  StoreWrite write;
  std::optional<Grant> reply;  // nullopt: a stale request, nothing to send
};

// `mine` is the LedgerConfig the calling broker builds from its own cluster
// file (its `persist` and `liveness` are ignored: the store records
// acceptances with the ledger itself, in the same transaction, and liveness is
// StoreView::live; its `switches` are used, tests only). A stored ledger keeps
// its own config (R1): `mine` replaces it only when its generation is newer. `now` is the caller's monotonic clock; it only shapes displayed
// durations, never a rule.
//
// ApplyRenew: one renew request of the calling broker.
// Failure: kProtocol naming a stored key whose value does not parse, or a
// stored config that Ledger::Validate refuses; kConfig when `mine` is refused
// by Ledger::Validate. Nothing to write then.
Result<RenewStep> ApplyRenew(const LedgerConfig& mine, const StoreView& read,
                             const RenewRequest& request, TimePoint now);

// R5: a clean stop of the calling instance. The caller writes the result
// and keeps its store lease running (never revokes it): the instance must
// stay counted with what it handed over until its successor's first request
// or its silence. Failure: as ApplyRenew. An unknown instance: empty write.
Result<StoreWrite> ApplyGoodbye(const LedgerConfig& mine, const StoreView& read,
                                const Goodbye& goodbye, TimePoint now);

// An operator's change through any broker (dsbctl, common/local_protocol.h).
struct AdminChange {
  enum class Kind { kRevoke, kDrain, kResume, kRevokeTarget, kForceRevoke, kSetLimit };
  Kind kind = Kind::kRevoke;
  std::string broker_id;     // all but kSetLimit
  std::string target;        // kRevokeTarget, kSetLimit
  std::uint32_t limit = 0;   // kSetLimit
};
// Failure: kConflict when `mine` is not the stored ledger's file (another
// generation, naming both, or another hash at the same generation); the
// Ledger call's failure (kConflict unknown broker, kUnknownTarget,
// kInvalidArgument for a limit below the reserved base or above the stored
// file's configured limit, naming that ceiling), or as ApplyRenew for bad
// stored values, or kBrokerUnavailable when there is no ledger in the store
// yet. Nothing to write then.
Result<StoreWrite> ApplyAdmin(const LedgerConfig& mine, const StoreView& read,
                              const AdminChange& change, TimePoint now);

// The stored ledger's write sequence number: raised by one by every write of
// this file's Apply* functions (the meta key carries it; a new ledger starts
// at 1). nullopt: no ledger in the store (no meta key). A meta key without a
// readable number reads 0 (the Apply* functions report it as kProtocol).
// A broker remembers the highest it has seen: a lower one later means the
// store went back in time (restored from a backup; a wiped store has none):
// refuse to apply grants from that read and write RestartLearning.
std::optional<std::uint64_t> StoredSequence(const StoreView& read);

// C3 again on the stored ledger, which stays as it is otherwise (verdicts,
// owed, limits, modes): the write puts meta with the sequence number raised
// to max(stored, at_least_seq) + 1 (pass the highest this broker saw, so that
// it and the brokers that saw less accept the store again) and
// start_learning (the caller puts kLearningKey on a new store lease with TTL
// >= Silence(), as for a new ledger). Any broker may write it, whatever its
// generation (more learning never breaks S). Failure: as ApplyRenew;
// kBrokerUnavailable when there is no ledger (the next renew starts one,
// learning).
Result<StoreWrite> RestartLearning(const LedgerConfig& mine, const StoreView& read, TimePoint now,
                                   std::uint64_t at_least_seq = 0);

// `dsbctl leases` from the store: the ledger as read, with silence measured
// by liveness (an instance with a live key is heard; last_seen_ago,
// lease_left and silence_left are not known from the store and left empty:
// the caller may fill silence_left from the store lease's time to live).
// Failure: as ApplyRenew; kBrokerUnavailable when there is no ledger yet.
Result<LedgerSnapshot> SnapshotOf(const LedgerConfig& mine, const StoreView& read, TimePoint now);

// The effective limit of every target of the stored ledger (config order),
// for status: {target name, limit}. Failure: as SnapshotOf.
Result<std::vector<std::pair<std::string, std::uint32_t>>> StoredLimits(const LedgerConfig& mine,
                                                                        const StoreView& read);

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_SHARED_LEDGER_H_
