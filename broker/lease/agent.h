// The broker-side lease agent (DESIGN section 7, rules B1, B1a, B2), pure logic.
//
// Rules to code:
//   B1   ActionCapacity() = floor + lease, where `lease` is the applied grant's
//        amount while now < valid_until = t_sent + D(1 - eps) on this broker's
//        clock, else 0. t_sent is the FIRST send of the request the grant
//        answers: SentRequest keeps it across resends (same request id).
//        Registrations are a second counter: MayAdmitRegistration() allows
//        registered < system_slots; MayAdmitAction() allows actions <
//        floor + lease; an action never uses an idle system slot.
//   R1   Nothing is used until the coordinator accepts this instance: floor 0,
//        no new registration, adopted action slots kept until the previous
//        instance's lease deadline. See accepted().
//   B1a  OnGrant applies a grant only if grant.epoch and instance are ours, the request id
//        is one we sent and it is greater than the applied one (per target);
//        anything else is ignored. A learning reply (C3) is never applied; it
//        only stops resends of that request.
//   B2   Each renew (Tick when due) reads pool_held = max(0, actions - floor)
//        from the usage snapshot passed IN THAT CALL and `applied` from the
//        agent's state in the same call: one instant. When the capacity falls
//        (a smaller grant, or the lease lapsing) the step reports `shrunk`; the
//        caller then raises the segment's revocation generation and admits no
//        action until held < the new capacity (the slot table does that when
//        given the lower capacity).
//   Renew every renew_interval (default D/3); an unanswered request is resent
//        with the same id every resend_interval (default D/12) until the next
//        renew replaces it. Early renew (liveness only; every request obeys the
//        same rules): no sooner than fast_renew_interval (default D/24) after
//        the previous send, Tick renews at once when the report changed in a
//        way the coordinator acts on: wanted changed, pool_held fell, a smaller
//        grant was applied and is not yet acknowledged, or threads wait while
//        every slot of the capacity is held. So call Tick also whenever the
//        usage changes (it is cheap), not only at the deadline. A restarted broker is a new agent
//        with a new epoch; its first report is whatever the caller's usage snapshot says, which
//        must count every slot still marked in the segments, quarantined ones
//        included.
//
// Driving it: construct at start, call Tick(now, usage) at start and whenever
// now >= the returned deadline; call OnGrant/OnRevokeNotice when one arrives.
// Every call returns an AgentStep: an optional request to send and the
// capacities to set. Plain structs in, plain structs out; no clock is read.
// Thread rule: not thread-safe; one strand.
#ifndef DSB_BROKER_LEASE_AGENT_H_
#define DSB_BROKER_LEASE_AGENT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "broker/lease/messages.h"
#include "broker/lease/switches.h"
#include "common/status.h"

namespace dsb::lease {

struct AgentTarget {
  std::string name;
  std::uint32_t system_slots = 1;  // DigiScope instances this broker may register
  std::uint32_t floor = 0;         // action slots it may always use
  // R1: the lease deadline the previous instance left in the segment (this
  // broker's monotonic clock), if any: adopted action slots are kept until then
  // while this instance is not yet accepted.
  std::optional<TimePoint> inherited_until{};
};

struct AgentConfig {
  std::string broker_id;
  std::uint64_t epoch = 0;  // REQUIRES: greater than every earlier epoch of this broker id (R0)
  std::uint64_t instance = 0;    // R0: random per start
  std::uint64_t generation = 0;  // R1: the cluster file's generation
  std::string file_hash;         // R1: its hash
  std::vector<AgentTarget> targets;
  Duration term = std::chrono::seconds(15);  // D
  Duration renew_interval{};                 // 0 = D/3
  Duration resend_interval{};                // 0 = D/12
  Duration fast_renew_interval{};            // 0 = D/24; >= renew_interval disables early renew
  double eps = 1e-3;
  ProtocolSwitches switches;  // tests only
};

// What the caller reads from one target's slot table at one instant.
struct TargetUsage {
  std::uint32_t actions = 0;  // action slots marked held (quarantined included)
  std::uint32_t waiting = 0;  // threads waiting for an action slot
  // An upper bound of `actions` at the instant of the call, for the B2 report
  // (pool_held). A slot-by-slot scan of a table that clients change meanwhile
  // can miss one held slot per free slot it saw; the number of slots not
  // disabled cannot be undercounted that way. 0 = use `actions`.
  std::uint32_t actions_upper_bound = 0;
  std::uint32_t registered = 0;  // registrations held (R2)
};

struct TargetCapacity {
  std::uint32_t action_capacity = 0;        // floor + valid lease (B1)
  std::uint32_t registration_capacity = 0;  // system_slots (B1)
  std::uint32_t lease = 0;                  // valid lease amount (0 once lapsed)
  std::optional<TimePoint> lease_valid_until;
  std::uint64_t applied = 0;  // request id of the applied grant (0 if none)
  bool shrunk = false;  // capacity fell since the previous step: raise the revocation generation
};

struct AgentStep {
  std::optional<RenewRequest> send;     // send this (new or resent request)
  std::vector<TargetCapacity> targets;  // config order
  TimePoint deadline;                   // call Tick again at this time at the latest
};

class LeaseAgent {
 public:
  // Checks a config: kConfig for no targets, empty/duplicate names, term <= 0,
  // eps outside [0, 0.1), renew/resend intervals negative or not below D.
  static Status Validate(const AgentConfig& config);

  // REQUIRES: Validate(config).ok(). The first Tick sends the first request.
  LeaseAgent(AgentConfig config, TimePoint now);

  // Drives timers: sends the renew when due (a new request id, with `usage` as
  // its report) or resends the outstanding request, and lets a lapsed lease go.
  // REQUIRES: usage.size() == targets, in config order.
  AgentStep Tick(TimePoint now, std::span<const TargetUsage> usage);

  // Applies `grant` if B1a allows (see the file comment); otherwise ignores it.
  // Either way returns the current capacities (no request to send).
  AgentStep OnGrant(TimePoint now, const Grant& grant);

  // A revoke/drain hint from the coordinator: renew at once (the caller should
  // call Tick now). Ignored for another epoch or broker.
  AgentStep OnRevokeNotice(TimePoint now, const RevokeNotice& notice);

  // The ledger may already have given away what this instance was owed (etcd
  // mode: its live key was deleted, or its etcd lease ended early): every
  // applied lease becomes 0 at once (capacity = floor), and the step reports
  // `shrunk` like a smaller grant (B2: raise the revocation generation), and a
  // renew is due at once. A later grant (a request sent after this call, or
  // an outstanding one the ledger answers afterwards) is applied normally.
  AgentStep DropLease(TimePoint now);

  // B1 admission rules at `now`: may one more registration / action be admitted
  // while `registered` clients and `actions` action slots are held?
  bool MayAdmitRegistration(std::size_t target, std::uint32_t registered) const;
  bool MayAdmitAction(std::size_t target, std::uint32_t registered, std::uint32_t actions,
                      TimePoint now) const;

  // Capacity of one target at `now` (no side effects).
  TargetCapacity Capacity(std::size_t target, TimePoint now) const;

  // R1: the coordinator's word on this instance. Until kAccepted the instance
  // has floor 0 and registration capacity 0 (adopted slots are kept, see
  // AgentTarget::inherited_until); a later kRefused/kRemoved/kSuperseded takes
  // the allowance away again.
  bool accepted() const { return accepted_; }
  Verdict verdict() const { return verdict_; }
  const std::string& verdict_reason() const { return reason_; }
  const std::string& successor() const { return successor_; }
  // R2: a removed broker erased its accepted configuration; later requests say so.
  void MarkErased() { erased_ = true; }

  std::uint64_t epoch() const { return config_.epoch; }
  std::uint64_t instance() const { return config_.instance; }
  const AgentConfig& config() const { return config_; }
  Duration renew_interval() const { return renew_interval_; }
  Duration resend_interval() const { return resend_interval_; }
  // Grants ignored by B1a so far (for metrics and tests).
  std::uint64_t ignored_grants() const { return ignored_grants_; }

 private:
  struct SentRequest {
    TimePoint first_sent;
    TimePoint last_sent;
  };
  struct Lease {
    std::uint64_t applied = 0;
    std::uint32_t amount = 0;
    TimePoint valid_until{};
    std::uint32_t last_capacity = 0;
  };

  static constexpr std::uint32_t kUnset = UINT32_MAX;
  AgentStep Step(TimePoint now);
  std::uint32_t Floor(std::size_t target) const;  // the accepted floor, else 0
  RenewRequest BuildRequest(std::span<const TargetUsage> usage);
  // Whether the report changed enough to renew early (ignoring the rate limit).
  bool ReportChanged(TimePoint now, std::span<const TargetUsage> usage) const;

  AgentConfig config_;
  Duration renew_interval_;
  Duration resend_interval_;
  Duration fast_renew_interval_;
  Duration lease_span_;  // D(1 - eps), or D with the B1 eps switch off
  std::uint64_t next_id_ = 1;
  TimePoint next_renew_;
  std::optional<RenewRequest> outstanding_;
  bool outstanding_answered_ = false;
  TimePoint next_resend_{};
  std::map<std::uint64_t, SentRequest> sent_;  // ids we may still apply a grant for
  std::vector<Lease> leases_;                  // per target
  std::vector<TargetUsage> previous_usage_;    // only for the B2 switch
  TimePoint last_send_{};
  bool sent_any_ = false;
  std::vector<TargetReport> last_report_;    // per target, as last sent
  bool shrink_unacked_ = false;              // a smaller grant was applied since the last send
  std::optional<TimePoint> early_renew_at_;  // an early renew waits for the rate limit
  std::uint64_t ignored_grants_ = 0;
  bool accepted_ = false;
  Verdict verdict_ = Verdict::kPending;
  std::uint64_t verdict_request_ = 0;  // request id of the reply that set verdict_
  std::string reason_;
  std::string successor_;
  bool erased_ = false;
  std::vector<std::uint32_t> frozen_;  // per target: adopted actions, ratcheting down
};

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_AGENT_H_
