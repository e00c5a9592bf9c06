// The coordinator's lease ledger (DESIGN section 7, rules C1-C3 and Requests).
//
// Rules to code:
//   C1 (owed)      BrokerState keeps, per target, the newest report (pool_held h,
//                  applied a) of the broker's current epoch and `grants`: the
//                  amount of every grant sent to that epoch, by request id.
//                  Owed() = max(h, amounts of grants with id >= a). A grant is
//                  recorded in OnRequest before it is returned (it "enters the
//                  ledger when it is sent"). A grant is at most
//                  MaxGrant(pool, sum of the others' Owed()). A request of a newer
//                  epoch clears `grants` (and every `a`) first.
//   C2 (falls)     Owed() falls only when a newer report raises a or lowers h, or
//                  when no request arrived for Silence() = (D + H)(1 + eps) on the
//                  coordinator's clock (ForgetSilent() then drops grants and
//                  reports). Revoke/Drain only set the broker's mode: its later
//                  grants are 0; owed is untouched. ForceRevoke is the exception
//                  and is documented as breaking S unless the broker is dead.
//                  SetPool lowers the pool for later grants; what others owe is
//                  still subtracted, so capacity frees only as owed falls.
//   C3 (restart)   A Ledger is always created without state: until
//                  created + Silence() it records requests as usual but answers
//                  each with Grant{learning = true, targets = {}} (no amounts; the
//                  broker must not apply it) and records no grant.
//   Requests       (epoch, request_id) not newer than the newest processed: only
//                  the silence timer moves; no reply, except that an exact
//                  duplicate of the newest gets the stored reply again (re-entered
//                  in the ledger, since a grant enters the ledger when sent).
//   Sharing        Amounts are FairShares(pool, wanted, weights) over brokers
//                  with live state and not revoked/drained, each bounded by C1.
//
// Time: every call takes `now` on the coordinator's own monotonic clock; the
// ledger never reads a clock. Thread rule: not thread-safe; the owner calls it
// from one strand.
#ifndef DSB_BROKER_LEASE_LEDGER_H_
#define DSB_BROKER_LEASE_LEDGER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
};

struct LedgerConfig {
  std::vector<LedgerTarget> targets;
  std::vector<LedgerBroker> brokers;
  Duration term = std::chrono::seconds(15);  // D
  Duration drain = std::chrono::seconds(5);  // H: time a lapsed lease's slots take to come back
  double eps = kDefaultEps;                  // clock drift allowance
  ProtocolSwitches switches;                 // tests only; default all clauses on
};

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
  // request). The reply is Grant{learning = true} while learning (C3).
  // Failure: kConflict if broker_id is not in the config. Unknown targets in the
  // report are ignored; a target missing from a report keeps its previous report
  // values (a is reset to 0 on a new epoch).
  Result<std::optional<Grant>> OnRequest(TimePoint now, const RenewRequest& request);

  // Revoke/Drain: from now on the broker's grants are 0 (send it a RevokeNotice
  // so it renews early). Owed does NOT fall (C2). Resume undoes both.
  // Failure: kConflict for an unknown broker.
  Status Revoke(std::string_view broker_id, TimePoint now);
  Status Drain(std::string_view broker_id, TimePoint now);
  Status Resume(std::string_view broker_id, TimePoint now);
  // Forgets everything the broker is owed at once and revokes it.
  // BREAKS S unless the broker's workstation is really dead (its clients hold no
  // session): the admin tool must say so and ask the operator to confirm.
  Status ForceRevoke(std::string_view broker_id, TimePoint now);

  // Sets a target's pool (or its limit L: the pool moves by the same amount,
  // never below 0). Lowering shrinks later grants at once; capacity counts as
  // free only as owed falls (C2). Failure: kUnknownTarget; kInvalidArgument if
  // SetLimit is given a limit below the target's reserved base (L0 - P0).
  Status SetPool(std::string_view target, std::uint32_t pool, TimePoint now);
  Status SetLimit(std::string_view target, std::uint32_t limit, TimePoint now);

  bool Learning(TimePoint now) const { return now < learning_until_; }
  // (D + H)(1 + eps), rounded up to the next nanosecond.
  Duration Silence() const { return silence_; }
  // C1 owed of one broker for one target as of `now` (0 once silent).
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
    std::uint32_t held = 0, waiting = 0, wanted = 0;
  };
  struct BrokerState {
    BrokerMode mode = BrokerMode::kActive;
    bool known = false;  // state of the current epoch exists (cleared by silence)
    bool has_newest = false;
    std::uint64_t epoch = 0;
    std::uint64_t newest_id = 0;
    std::optional<TimePoint> last_heard;
    std::optional<TimePoint> last_grant_at;  // arrival of the request the newest grant answers
    std::vector<TargetReportState> reports;  // per target
    std::map<std::uint64_t, std::vector<std::uint32_t>> grants;  // request id -> amount per target
    std::optional<Grant> last_reply;
  };

  bool Silent(const BrokerState& b, TimePoint now) const;
  void ForgetSilent(TimePoint now);
  std::optional<std::size_t> BrokerIndex(std::string_view id) const;
  std::optional<std::size_t> TargetIndex(std::string_view name) const;
  Grant ComputeGrant(std::size_t broker, const RenewRequest& request, TimePoint now);
  void RecordGrant(std::size_t broker, const Grant& grant);
  Status SetMode(std::string_view broker_id, BrokerMode mode, TimePoint now);

  LedgerConfig config_;
  Duration silence_;
  TimePoint learning_until_;
  std::vector<BrokerState> brokers_;
};

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_LEDGER_H_
