// The coordinator's lease ledger (DESIGN section 7, rules C1-C3, Requests and
// the reconfiguration rules R0-R5).
//
// Rules to code:
//   Instances (R0, R4) The ledger keeps state per broker *instance*: one start
//                  of a broker, named by (broker id, epoch, instance id). A broker
//                  id may have several at once (a restart before the old one is
//                  silent; a cloned machine). An older instance's owed is kept
//                  until that instance is silent: a new epoch or instance never
//                  drops grants an older live instance may still use. Two
//                  instances of one id heard within D of each other are logged
//                  (TakeWarnings) as a clone.
//   C1 (owed)      Per instance and target: the newest report (pool_held h,
//                  applied a) and every grant sent to that instance by request
//                  id. Owed = max(h, amounts of grants with id >= a). A grant is
//                  recorded before it is returned.
//   C2 (falls)     Owed falls only through C1, or to 0 when the instance sent no
//                  request for Silence() = (D + H)(1 + eps) on the coordinator's
//                  clock (the instance is then forgotten). Revoke/Drain only make
//                  later grants 0. ForceRevoke forgets every instance of a broker
//                  (breaks S unless the workstation is dead).
//   C3 (restart)   Until created + Silence() (and again after OpenGate) every
//                  request is answered with Grant{learning = true}: no amounts, no
//                  acceptance.
//   R1 (verdicts)  A new instance starts kPending. It is kRefused if its file's
//                  generation is older than the ledger's, or equal with another
//                  file hash, or its epoch is older than an instance of that id
//                  the ledger has known; kRemoved if its id is not in the ledger's
//                  config; kSuperseded if the ledger stepped down. A request of a
//                  NEWER generation makes the ledger step down at once
//                  (newer_generation_seen(); the caller persists the mark, R3).
//   R2 (counting)  Per target, an instance counts
//                    accepted:           max(system_slots, registered) + floor
//                    pending (in file):  the same with the file's allowance (it is
//                                        reserved while the instance waits, so
//                                        grants to others shrink and it fits)
//                    refused/removed:    registered
//                    after a goodbye:    registered + actions - pool_held handed
//                  plus its owed (C1) on top. A broker counts the larger of
//                  the sum over its live instances and its base: the allowance
//                  its file (or a recorded acceptance) gives it, kept while no
//                  instance is heard, since its clients keep their sessions.
//                  The pool for grants is room - sum(counted), room = L - r. A pending instance is
//                  accepted only when sum(counted) + sum(owed) <= room for every
//                  target, never while learning or while the gate is closed, and
//                  only after `persist` recorded the acceptance durably. A removed
//                  instance leaves the count only on a report with `erased` set
//                  and nothing held (or ForceRevoke).
//   R3 (one coord) Gate: kOpen; kWaiting (WaitForPrevious: a previous
//                  coordinator may still grant: nothing is accepted or granted
//                  until OpenGate, which starts a new learning period);
//                  kSuperseded (never grants again).
//   R5 (goodbye)   OnGoodbye: the instance's grants are dropped and it counts
//                  exactly what it handed over, until its successor (a newer
//                  instance of the same id) sends its first request or it is
//                  silent.
//   Requests       Within one instance, a request not newer (request id) than the
//                  newest processed moves only the silence timer; an exact
//                  duplicate of the newest gets the stored reply again.
//   Sharing        Amounts are FairShares(pool, wanted, weights) over accepted,
//                  live, active instances, each bounded by pool - owed of all
//                  other instances.
//
// Time: every call takes `now` on the coordinator's own monotonic clock; the
// ledger never reads a clock. Thread rule: not thread-safe; the owner calls it
// from one strand.
//
// Liveness mode (LedgerConfig::liveness set; the shared ledger in a store,
// shared_ledger.h): silence is not measured on `now` but asked of the oracle
// (an instance is silent iff the oracle says it is not alive: its store lease,
// TTL >= Silence(), expired); the clone rule "heard within D" reads "both
// alive"; the learning period (C3) is set from outside by SetLearning. `now`
// then decides no rule, and the snapshot leaves every duration measured on it
// empty (last_seen_ago, lease_left, silence_left, learning_left). The whole
// state of such a ledger can be saved and loaded (SaveState/LoadState), so it
// can live in a store between calls.
#ifndef DSB_BROKER_LEASE_LEDGER_H_
#define DSB_BROKER_LEASE_LEDGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "broker/lease/messages.h"
#include "broker/lease/switches.h"
#include "common/status.h"

namespace dsb::lease {

inline constexpr double kDefaultEps = 1e-3;

struct LedgerTarget {
  std::string name;
  std::uint32_t pool = 0;   // P = L - r - sum(system_slots + floor), computed by the caller
  std::uint32_t limit = 0;  // L (display, and the base for SetLimit); 0 = unknown
};

struct LedgerBroker {
  std::string id;
  std::uint32_t weight = 1;  // 1..kMaxWeight
  // R1/R2: this broker's allowance per target (config order) in the ledger's
  // file. Empty = 0 everywhere (then `pool` alone is the room for leases).
  std::vector<std::uint32_t> system_slots{};
  std::vector<std::uint32_t> floors{};
};

struct LedgerConfig {
  std::vector<LedgerTarget> targets;
  std::vector<LedgerBroker> brokers;
  Duration term = std::chrono::seconds(15);  // D
  Duration drain = std::chrono::seconds(5);  // H: time a lapsed lease's slots take to come back
  double eps = kDefaultEps;                  // clock drift allowance
  ProtocolSwitches switches;                 // tests only; default all clauses on
  std::uint64_t generation = 0;  // R1: the cluster file's generation
  std::string file_hash;         // R1: its hash; "" = any hash is this file (tests)
  // R2: records the acceptances (every accepted instance, the new one included)
  // durably before an acceptance is sent. False: it could not; the instance
  // stays pending. Empty: nothing to record (unit tests, simulation).
  std::function<bool(const std::vector<AcceptanceRecord>&)> persist;
  // Liveness mode (see the file comment): true iff the instance (broker id,
  // epoch, instance id) is alive. Empty: silence is measured on `now` (C2).
  std::function<bool(std::string_view broker_id, std::uint64_t epoch, std::uint64_t instance)>
      liveness;
};

enum class Gate { kOpen, kWaiting, kSuperseded };
const char* GateName(Gate g);

enum class BrokerMode { kActive, kDrained, kRevoked };
const char* BrokerModeName(BrokerMode m);

// One broker's line for one target in `dsbctl leases`.
struct BrokerLeaseView {
  std::string broker_id;
  std::uint32_t weight = 1;
  BrokerMode mode = BrokerMode::kActive;
  bool known = false;  // a request of its current epoch has been processed and not forgotten
  std::uint64_t epoch = 0;
  std::uint64_t newest_request = 0;
  std::uint32_t owed = 0;     // C1
  std::uint32_t granted = 0;  // amount of the newest grant sent (0 if none)
  std::uint32_t pool_held = 0;
  std::uint64_t applied = 0;
  std::uint32_t held = 0, waiting = 0, wanted = 0;  // demand as last reported
  // Estimate of the newest grant's end: its request arrived at most this long
  // from now + D ago. The broker's own lease ends earlier (it counts from send).
  std::optional<Duration> lease_left;
  std::optional<Duration> last_seen_ago;  // since the last request arrived
  std::optional<Duration> silence_left;   // until owed falls to 0 by silence (C2)
  Verdict verdict = Verdict::kPending;    // of the newest instance
  std::uint32_t instances = 0;            // live instances of this id (> 1: clone or restart)
  std::uint32_t counted = 0;              // R2: allowance counted (system + floor part)
  bool in_file = true;                    // false: a removed broker still counted
};

struct TargetLeaseView {
  std::string target;
  std::uint32_t limit = 0;
  std::uint32_t pool = 0;
  std::uint64_t owed_total = 0;  // may exceed pool for a while after SetPool lowered it
  std::uint32_t free = 0;        // pool - owed_total, or 0
  std::vector<BrokerLeaseView> brokers;
};

struct LedgerSnapshot {
  Gate gate = Gate::kOpen;
  std::uint64_t generation = 0;
  bool learning = false;
  Duration learning_left{};
  Duration term{}, drain{}, silence{};
  std::vector<TargetLeaseView> targets;
};

class Ledger {
 public:
  // Checks a config. Failure: kConfig naming the bad value (no targets or
  // brokers, duplicate or empty names, weight outside 1..kMaxWeight, term or
  // drain not positive, eps outside [0, 0.1)).
  static Status Validate(const LedgerConfig& config);

  // Starts an empty ledger at `now`, in learning mode (C3) unless the C3 switch
  // is off. REQUIRES: Validate(config).ok().
  Ledger(LedgerConfig config, TimePoint now);

  // Processes one renew request arrived at `now`.
  // Returns the reply to send, or std::nullopt when nothing is sent (a stale
  // request). The reply is Grant{learning = true} while Learning(now). A broker
  // id not in the config gets verdict kRemoved (R1), never an error. Unknown
  // targets in the report are ignored; a target missing from a report keeps
  // that instance's previous values.
  // Failure: none today (kept a Result for callers).
  Result<std::optional<Grant>> OnRequest(TimePoint now, const RenewRequest& request);

  // R5: a clean stop of an instance (see the file comment). Unknown instances
  // are ignored (returns false).
  bool OnGoodbye(TimePoint now, const Goodbye& goodbye);

  // R3. WaitForPrevious closes the gate until OpenGate(now), which starts a new
  // learning period (C3) at `now`. Supersede stops every grant for good.
  void WaitForPrevious();
  void OpenGate(TimePoint now);
  // `successor` ("id@host:port", may be empty) is named in every later reply.
  void Supersede(std::uint64_t by_generation, std::string successor = {});
  Gate gate() const { return gate_; }
  // The newest generation a request named, if newer than the ledger's (0: none).
  std::uint64_t newer_generation_seen() const { return newer_generation_; }
  // R2/R3: acceptances restored from this coordinator's state_dir or handed over
  // by the previous coordinator: counted with their allowance as if heard at
  // `now` (forgotten after Silence() unless they report).
  void AdoptRecords(const std::vector<AcceptanceRecord>& records, TimePoint now);
  // Every instance not yet forgotten that was accepted (here, or by the
  // coordinator whose records were adopted), whatever its verdict now; and per
  // broker its base (the allowance it may be using while unheard) as a record
  // with epoch 0 and instance 0, which AdoptRecords turns back into a base.
  std::vector<AcceptanceRecord> Records() const;
  // Loud events since the last call (clones, refusals), one line each.
  std::vector<std::string> TakeWarnings();
  // Events worth one log line at warn since the last call: an instance
  // forgotten after Silence() without a request (C2: what it was owed went
  // back to the pool; a dead workstation shows up here first).
  std::vector<std::string> TakeNotices();

  // Revoke/Drain: from now on the broker's grants are 0 (send it a RevokeNotice
  // so it renews early). Owed does NOT fall (C2). Resume undoes both.
  // Failure: kConflict for an unknown broker.
  Status Revoke(std::string_view broker_id, TimePoint now);
  Status Drain(std::string_view broker_id, TimePoint now);
  Status Resume(std::string_view broker_id, TimePoint now);
  // Revoke for one target only: the broker's later grants for `target` are 0
  // (its other targets are untouched); owed does not fall (C2). Resume undoes
  // it. Failure: kConflict for an unknown broker, kUnknownTarget for an
  // unknown target.
  Status RevokeTarget(std::string_view broker_id, std::string_view target, TimePoint now);
  // Forgets everything the broker is owed at once and revokes it. A broker no
  // longer in the cluster file (removed, still counted with its last accepted
  // allowance, R2) is forgotten entirely: its allowance leaves the count too,
  // as R2 allows "when an operator confirms it dead", and the acceptance
  // records are rewritten without it (`persist`) so a coordinator restart does
  // not count it again. A broker in the file keeps the allowance the file
  // gives it (remove it from the file to give that to the others).
  // BREAKS S unless the broker's workstation is really dead (its clients hold no
  // session): the admin tool must say so and ask the operator to confirm.
  // Failure: kConflict for a broker the ledger does not know; kInternal when
  // the records could not be rewritten (then nothing changed).
  Status ForceRevoke(std::string_view broker_id, TimePoint now);
  // True if the ledger knows the broker: in the cluster file, or removed from
  // it but still counted (`in_file: false` in the snapshot).
  bool Knows(std::string_view broker_id) const;
  // The broker's mode for target `target_index` as grants see it (a target
  // revoked alone reads kRevoked); kActive for a broker the ledger does not
  // know. REQUIRES: target_index < targets.
  BrokerMode ModeOf(std::string_view broker_id, std::size_t target_index) const;

  // Sets a target's pool (or its limit L: the pool moves by the same amount,
  // never below 0). Lowering shrinks later grants at once; capacity counts as
  // free only as owed falls (C2). The pool and limit the ledger's config gave
  // (P0, L0: the cluster file's) are the ceiling (DESIGN section 8: the
  // configured limit is the ceiling of every other source; a discovered or
  // operator limit only lowers it, S): a ledger of an older file cannot be
  // talked into more than the server has. Failure: kUnknownTarget;
  // kInvalidArgument if SetLimit is given a limit below the target's reserved
  // base (L0 - P0) or above L0, or SetPool a pool above P0 (naming the ceiling).
  Status SetPool(std::string_view target, std::uint32_t pool, TimePoint now);
  Status SetLimit(std::string_view target, std::uint32_t limit, TimePoint now);

  // True while no amount or acceptance is given: C3's learning period, or the
  // gate (R3) not open.
  bool Learning(TimePoint now) const {
    return gate_ != Gate::kOpen || (config_.liveness ? learning_ : now < learning_until_);
  }
  // Liveness mode: C3's learning period as the store says (its learning key
  // exists). A new ledger in liveness mode starts learning (unless the C3
  // switch is off). No effect without liveness mode.
  void SetLearning(bool learning) { learning_ = learning; }

  // The whole state but time points (which liveness mode does not use), as
  // JSON: {"v": 1, "meta": {...}, "targets": [{...} per target, config order]}.
  // "meta" holds the config (but pools and limits), the gate and per instance
  // what is not per target; each "targets" entry holds that target's pool,
  // limit and per broker and instance its report, allowance and grant
  // amounts (so that a store can keep one key per target), and the pool its
  // config gave (the ceiling of SetPool/SetLimit). Deterministic:
  // equal states serialize to equal text. Warnings and notices not taken
  // are not part of the state.
  boost::json::object SaveState() const;
  // A ledger from SaveState's output. Of `config` only `persist`, `liveness`
  // and `switches` are used (the rest comes from the state); learning starts
  // as SetLearning(false). Failure: kProtocol naming the field that is
  // missing, of the wrong type or inconsistent (never undefined behaviour);
  // kConfig when the stored config fails Validate; kInvalidArgument when
  // `config.liveness` is empty (a state without time points needs it).
  static Result<Ledger> LoadState(LedgerConfig config, const boost::json::object& state);
  // (D + H)(1 + eps), rounded up to the next nanosecond.
  Duration Silence() const { return silence_; }
  // C1 owed of one broker (all its live instances) for one target as of `now`.
  // REQUIRES: broker_index < brokers, target_index < targets.
  std::uint32_t Owed(std::size_t broker_index, std::size_t target_index, TimePoint now) const;
  // The index of a broker id in the config, or nullopt.
  std::optional<std::size_t> FindBroker(std::string_view id) const { return BrokerIndex(id); }

  LedgerSnapshot Snapshot(TimePoint now) const;
  const LedgerConfig& config() const { return config_; }

 private:
  struct TargetReportState {
    std::uint32_t pool_held = 0;
    std::uint64_t applied = 0;
    std::uint32_t held = 0, waiting = 0, wanted = 0, registered = 0;
  };
  struct Instance {
    std::uint64_t epoch = 0;
    std::uint64_t instance = 0;
    Verdict verdict = Verdict::kPending;
    std::string reason;
    bool goodbye = false;
    bool has_newest = false;  // a request arrived (not only restored or handed over)
    std::uint64_t newest_id = 0;
    TimePoint last_heard{};
    std::optional<TimePoint> last_grant_at;
    std::vector<TargetReportState> reports;                        // per target
    std::vector<std::uint32_t> system_slots, floors;               // accepted allowance
    std::vector<std::uint32_t> handed;                             // R5: counted after goodbye
    std::map<std::uint64_t, std::vector<std::uint32_t>> grants;    // request id -> amounts
    std::optional<Grant> last_reply;
    bool clone_logged = false;
    bool newer_file = false;  // runs a newer generation: pending until its coordinator takes over
  };
  struct BrokerState {
    std::string id;
    std::optional<std::size_t> config_index;  // nullopt: not in the file (removed)
    BrokerMode mode = BrokerMode::kActive;
    // RevokeTarget: per target (config order), revoked for that target alone.
    // Empty = none (a broker met after the config gets it sized on first use).
    std::vector<bool> revoked_targets;
    bool TargetRevoked(std::size_t t) const {
      return t < revoked_targets.size() && revoked_targets[t];
    }
    std::uint64_t max_epoch = 0;
    std::vector<Instance> instances;
    // R2: per target, the allowance this broker may be using even when no
    // instance of it is heard (its clients keep their sessions through a dead
    // broker): the file's allowance, raised by any recorded acceptance. Only an
    // empty "erased" report of a removed broker sets it to 0.
    std::vector<std::uint32_t> base;
    std::optional<TimePoint> last_heard;  // any instance (for the view)
  };

  bool Silent(const BrokerState& b, const Instance& in, TimePoint now) const;
  void ForgetSilent(TimePoint now);
  std::optional<std::size_t> BrokerIndex(std::string_view id) const;
  std::optional<std::size_t> TargetIndex(std::string_view name) const;
  BrokerState& BrokerFor(std::string_view id);
  std::uint32_t InstanceOwed(const Instance& in, std::size_t t) const;
  std::uint32_t Counted(const BrokerState& b, const Instance& in, std::size_t t) const;
  // max(base, sum of Counted over the instances not silent at `now`).
  std::uint32_t BrokerCounted(const BrokerState& b, std::size_t t, TimePoint now) const;
  // Over instances not silent at `now`.
  std::uint64_t SumCounted(std::size_t t, TimePoint now) const;
  std::uint64_t SumOwed(std::size_t t, const Instance* except, TimePoint now) const;
  std::uint32_t PoolNow(std::size_t t, TimePoint now) const;  // room - sum(counted), or 0
  bool Fits(TimePoint now) const;
  void TryAccept(BrokerState& b, Instance& in, TimePoint now);
  Instance NewInstance(BrokerState& b, const RenewRequest& request);
  Grant ReplyBase(const RenewRequest& request, const Instance& in) const;
  Grant ComputeGrant(const BrokerState& b, const Instance& in, const RenewRequest& request,
                     TimePoint now);
  void RecordGrant(Instance& in, const Grant& grant);
  Status SetMode(std::string_view broker_id, BrokerMode mode, TimePoint now);
  AcceptanceRecord RecordOf(const BrokerState& b, const Instance& in) const;

  LedgerConfig config_;
  Duration silence_;
  TimePoint learning_until_;
  bool learning_ = false;  // liveness mode: C3 as set from outside
  Gate gate_ = Gate::kOpen;
  std::uint64_t newer_generation_ = 0;
  std::string successor_;
  std::vector<std::uint32_t> room_;           // per target: L - r
  // Per target: the pool the config gave (P0), the ceiling of SetPool (and so
  // L0 = base + P0 of SetLimit). Kept in the saved state ("configured_pool").
  std::vector<std::uint32_t> configured_pool_;
  std::vector<std::uint32_t> file_allowance_; // per target: sum(system_slots + floor) in the file
  std::vector<BrokerState> brokers_;          // config order, then brokers not in the file
  std::vector<std::string> warnings_;
  std::vector<std::string> notices_;
};

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_LEDGER_H_
