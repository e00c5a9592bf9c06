// Target: one server account served by this broker: its slot table (created
// or adopted), its quarantine bookkeeping and its counters.
//
// Thread rule: all calls on the broker's strand (single-threaded io_context).
#ifndef DSB_BROKER_TARGET_H_
#define DSB_BROKER_TARGET_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sys/types.h>
#include <string>
#include <vector>

#include "broker/config/broker_config.h"
#include "common/account.h"
#include "common/status.h"
#include "shm/slot_table.h"

namespace dsb::broker {

using Clock = std::chrono::steady_clock;

class Target {
 public:
  // Creates the target's segment, or adopts an existing valid one (a broker
  // restart): slots of its owners stay held until Adopt()ed or the grace
  // ends (ReleaseUnadopted). Errors: kSegmentInvalid (an existing segment
  // failed validation or has another size or target: the message says how
  // to remove it), kSegmentUnavailable.
  // `keep_lower_adopted`: an adopted segment whose capacity is below
  // `initial_capacity` keeps its capacity (see capacity()).
  // `adopted_holds_only` (cluster mode, R1: nothing new until the coordinator
  // accepts this broker): an adopted segment's capacity becomes what is in use
  // in it (no slot free), never more than it was; `initial_capacity` then
  // applies only to a new segment.
  static Result<std::unique_ptr<Target>> Open(const config::BrokerConfig& broker,
                                              const config::TargetConfig& target,
                                              std::uint32_t initial_capacity, Clock::time_point now,
                                              bool keep_lower_adopted = false,
                                              bool adopted_holds_only = false);

  const std::string& name() const { return config_.name; }
  const config::TargetConfig& config() const { return config_; }
  bool adopted_segment() const { return adopted_; }
  // A segment of this name existed at Open (adopted, or re-created because its
  // shape changed while nothing was held or quarantined in it).
  bool segment_existed() const { return existed_; }

  // The segment (the target's slot table), read and written only through
  // these: the table itself stays inside Target, which keeps its quarantine
  // bookkeeping and capacity in step with it.
  const std::string& segment_name() const { return table_->name(); }
  std::uint32_t slot_count() const { return table_->slot_count(); }
  // Changes with every re-creation of the segment: a client names it to
  // re-adopt its owner after a broker restart.
  std::uint64_t instance_id() const { return table_->instance_id(); }
  std::uint64_t revocation_generation() const { return table_->revocation_generation(); }
  // A scan of the slots and waiters (racing clients: a snapshot).
  shm::Counts Counts() const { return table_->Count(); }
  // Per owner, what it holds now.
  std::map<std::uint32_t, shm::OwnerHoldings> HoldingsByOwner() const {
    return table_->HoldingsByOwner();
  }
  // True if slot `index` holds `word` now (retiring or not).
  bool HeldBy(std::uint32_t index, std::uint64_t word) const { return table_->HeldBy(index, word); }
  // A new owner id for a registering client; 0 if the segment has handed out
  // every id (shm::SlotTable::AllocateOwner).
  std::uint32_t AllocateOwner() { return table_->AllocateOwner(); }
  // The lease deadline recorded in the segment (by this broker or, in an
  // adopted segment, by the previous one); nullopt if none.
  std::optional<Clock::time_point> lease_deadline() const;
  // Single-machine mode: no lease. Clears a fence a cluster-mode broker left
  // in the segment, or clients would fence their lease slots.
  void ClearLeaseFence() { table_->SetLeaseFence(0, 0); }
  // Cluster mode, a clean stop (R5): admits nothing new, capacity down to the
  // held action slots that are not retiring (never raised).
  void FreezeAtHeld();
  // Removes the segment's name (shm::SlotTable::Remove); the mapping stays
  // valid until this Target is destroyed. Only when nothing is held in it
  // (a clean stop) or this start made it (a failed start).
  Status RemoveSegment() const { return shm::SlotTable::Remove(table_->name()); }

  // Owners found holding slots in an adopted segment, still waiting to reconnect.
  const std::set<std::uint32_t>& pending_owners() const { return pending_; }
  // A reconnecting client claims `owner`. True if it held slots in the adopted
  // segment, or (during the grace) if the id was handed out by an earlier
  // broker: an idle cluster-mode client holds nothing in the table.
  // REQUIRES: the caller checked `owner` is not registered now.
  bool Adopt(std::uint32_t owner);
  bool in_grace() const { return in_grace_; }
  // Grace over: frees (and quarantines) every slot held by an owner that is not
  // in `registered` (a fresh scan: also owners that took slots after the open).
  std::uint32_t ReleaseUnadopted(Clock::time_point now, const std::set<std::uint32_t>& registered);

  // Cluster mode: a dead client's registration stays counted for the
  // target's quarantine (its system session may linger on the server).
  void QuarantineRegistration(Clock::time_point now);
  // Cluster mode: a registration that said goodbye stays counted for the
  // target's release_cooldown (its system session was closed just before; the
  // server may still count it). Nothing if the cooldown is 0.
  void CoolRegistration(Clock::time_point now);
  // Registrations counted with no client behind them: dead clients' (in
  // quarantine) plus clean ones cooling. Every caller counts both alike;
  // cooling_registrations() says how many of them are only cooling (the
  // system-slot refusal names which, so an operator knows whether to wait a
  // second or for the quarantine).
  std::uint32_t quarantined_registrations() const {
    return static_cast<std::uint32_t>(registration_quarantine_.size() +
                                      registration_cooling_.size());
  }
  std::uint32_t cooling_registrations() const {
    return static_cast<std::uint32_t>(registration_cooling_.size());
  }

  // A fresh segment after an unclean end of the previous broker (a machine
  // restart): up to `slots` sessions, and in cluster mode `registrations`
  // system sessions, of earlier clients may still be open on the server.
  // Puts that many unheld slots in quarantine and counts that many
  // registrations, for the target's quarantine period. Returns the number of
  // slots put in quarantine (at most the table's size).
  std::uint32_t HoldBackAfterUncleanEnd(std::uint32_t slots, std::uint32_t registrations,
                                        Clock::time_point now);

  // A client died or left: frees its slots (quarantined per config). Returns
  // the number of slots freed.
  std::uint32_t Reclaim(std::uint32_t owner, Clock::time_point now);
  // Ends quarantines that are due; returns the next due time (max() if none).
  Clock::time_point ExpireQuarantine(Clock::time_point now);
  Clock::time_point next_quarantine_end() const;
  // The end of the latest slot quarantine (min() if no slot is quarantined).
  Clock::time_point last_quarantine_end() const {
    return quarantine_.empty() ? Clock::time_point::min() : quarantine_.rbegin()->first;
  }

  void SetCapacity(std::uint32_t capacity);
  // The next capacity change that shrinks asks slot `index` (held with
  // `word`: a session the server just refused) back first; cleared by it or
  // by ClearRetireFirst().
  void RetireFirst(std::uint32_t index, std::uint64_t word) { retire_first_ = {index, word}; }
  void ClearRetireFirst() { retire_first_.reset(); }
  // Cluster mode: capacity = floor + lease, the lease valid until `lease_end`
  // (nullopt: no lease). Recorded in the segment, whose slots at index >=
  // floor become unusable at the deadline itself, whether this broker runs
  // then or not (shm/segment_layout.h, invariant 4). Never waits on the
  // segment's queue mutex.
  void SetLeaseCapacity(std::uint32_t capacity, std::uint32_t floor,
                        std::optional<Clock::time_point> lease_end);
  std::uint32_t capacity() const { return capacity_; }

  // Serves the segment's waiter queue without waiting (Pump). If its mutex
  // has been held for a second or more, looks at it (SlotTable::CheckQueue):
  // garbage or a holder that no longer exists is re-initialised and logged;
  // a live holder (a stopped process) is logged once and left alone, the
  // clients poll meanwhile. Called by the broker's timers and events.
  void ServiceQueue(Clock::time_point now);

  // What the periodic audits found and repaired, per kind, since the start
  // (see shm::SlotTable::AuditFindings for each kind).
  struct AuditCounters {
    std::uint64_t runs = 0;
    std::uint64_t excess_enabled = 0;
    std::uint64_t lost_capacity = 0;
    std::uint64_t forged_owners = 0;
    std::uint64_t forged_waiters = 0;
    std::uint64_t stray_quarantine = 0;
    std::uint64_t quarantine_cleared = 0;
    std::uint64_t future_cooling = 0;
    std::uint64_t invalid_words = 0;
    std::uint64_t header_fields = 0;
    std::uint64_t queue_repairs = 0;
    void Add(const shm::SlotTable::AuditFindings& f) {
      excess_enabled += f.excess_enabled;
      lost_capacity += f.lost_capacity;
      forged_owners += f.forged_owners;
      forged_waiters += f.forged_waiters;
      stray_quarantine += f.stray_quarantine;
      quarantine_cleared += f.quarantine_cleared;
      future_cooling += f.future_cooling;
      invalid_words += f.invalid_words;
      header_fields += f.header_fields;
      queue_repairs += f.queue_repairs;
    }
    std::uint64_t findings() const {
      return excess_enabled + lost_capacity + forged_owners + forged_waiters + stray_quarantine +
             quarantine_cleared + future_cooling + invalid_words + header_fields + queue_repairs;
    }
  };
  // Checks the segment against what this broker knows and repairs what a
  // client process wrote that only the broker may write (issue 9): enabled
  // slots above capacity, held words or waiters of owners that are neither in
  // `registered` nor pending adoption (nor, during the grace, ids an earlier
  // broker handed out), quarantined words it did not put there (given a full
  // quarantine), its own quarantined slots written over, cooling stamps beyond
  // the cooldown (clamped), invalid words (quarantined), broker-written header
  // fields, the queue (ServiceQueue). Logs one line per finding kind with
  // counts and the processes that have the segment mapped (the culprit is one
  // of them). Never waits. Returns true if it put slots in quarantine (the
  // caller re-arms its quarantine timer).
  // `registered`: owner -> pid of this target's registered clients.
  bool Audit(Clock::time_point now, const std::map<std::uint32_t, ProcessId>& registered);
  const AuditCounters& audit_counters() const { return audit_; }

  void CountSessionLimitReport() { ++session_limit_reports_; }
  std::uint64_t session_limit_reports() const { return session_limit_reports_; }
  std::uint64_t slots_reclaimed() const { return slots_reclaimed_; }

 private:
  Target() = default;
  Clock::time_point QuarantineEnd(Clock::time_point now) const;
  void Quarantine(const std::vector<std::uint32_t>& slots, Clock::time_point now);
  void QuarantineUntil(const std::vector<std::uint32_t>& slots, Clock::time_point end);

  config::TargetConfig config_;
  std::unique_ptr<shm::SlotTable> table_;
  bool adopted_ = false;
  bool existed_ = false;
  std::set<std::uint32_t> pending_;
  bool in_grace_ = false;
  std::uint32_t last_owner_at_open_ = 0;  // ids up to this one came from an earlier broker
  std::multiset<Clock::time_point> registration_quarantine_;  // ends, dead clients'
  std::multiset<Clock::time_point> registration_cooling_;     // ends, clean exits
  std::multimap<Clock::time_point, std::uint32_t> quarantine_;  // end -> slot
  std::uint32_t capacity_ = 0;
  std::optional<std::pair<std::uint32_t, std::uint64_t>> retire_first_;
  std::uint64_t session_limit_reports_ = 0;
  std::uint64_t slots_reclaimed_ = 0;
  // Audit reports are logged at most this often per target (with counts).
  static constexpr std::chrono::seconds kAuditLogInterval{10};
  void LogAudit(Clock::time_point now, const std::map<std::uint32_t, ProcessId>& registered);
  AuditCounters audit_;
  AuditCounters audit_logged_;                    // counts already in the log
  std::optional<Clock::time_point> last_audit_log_;
  std::vector<std::uint32_t> forged_ids_seen_;   // since the last report (a few)
  // Cooling deadlines an earlier broker's cooldown may have made (adopted
  // segment): the audit clamps only stamps past both this and now + cooldown.
  std::int64_t inherited_cooling_until_ns_ = 0;
  std::optional<Clock::time_point> queue_busy_since_;  // Pump found the mutex held
  ProcessId queue_holder_logged_ = 0;                   // last live holder logged
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_TARGET_H_
