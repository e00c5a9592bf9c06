// SlotTable: one target's slot table in shared memory (DESIGN section 5).
//
// The broker Create()s or adopts the segment; clients Attach() to it. Both
// sides then use the same object type:
//  - clients call TryAcquire / Acquire / Release / StillHeld with their own
//    held word (see segment_layout.h). Acquire and release of a free slot are
//    a few atomic operations: no system call, no lock. Waiting goes through a
//    FIFO queue in the segment guarded by a robust process-shared mutex, with
//    a futex per waiter, so waiters are served in arrival order and a
//    release wakes exactly the waiter it serves.
//  - the broker alone calls the methods under "Broker side".
//
// Thread rule: every method is safe from any thread of any attached process.
// Broker-side methods must be called by one thread at a time (the broker's
// strand).
#ifndef DSB_SHM_SLOT_TABLE_H_
#define DSB_SHM_SLOT_TABLE_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/account.h"
#include "common/status.h"
#include "shm/monotonic_clock.h"
#include "shm/segment_layout.h"

namespace dsb::shm {

class SegmentMemory;
class QueueLock;
class WaitWordRange;

namespace detail {
// Where a thread starts looking for a free slot: the last slot it used, so an
// uncontended acquire/release loop touches one cache line.
inline thread_local std::uint32_t tl_hint = 0;
}  // namespace detail

// Lets a waiting Acquire be interrupted from another thread. Arm() registers
// the futex word the waiter sleeps on (false: already interrupted, do not
// wait); the interrupter stores 1 into every armed word and futex-wakes it.
class WaitInterrupt {
 public:
  virtual ~WaitInterrupt() = default;
  virtual bool Arm(std::atomic<std::uint32_t>* word) = 0;
  virtual void Disarm(std::atomic<std::uint32_t>* word) = 0;
  virtual bool interrupted() const = 0;
};

struct CreateOptions {
  std::string name;    // segment name without leading '/', e.g. "dsb-ws1-exch01"
  std::string target;  // target name recorded in the header (<= 63 bytes)
  std::uint32_t slot_count = 64;
  std::uint32_t waiter_capacity = kDefaultWaiterCapacity;
  std::uint32_t capacity = 0;  // slots enabled at once
  // How long a released slot stays unusable (0..1h; see SetReleaseCooldown).
  std::chrono::nanoseconds release_cooldown{0};
  // POSIX: chown the segment to this gid (mode 0660). Windows: the group's
  // SID string, admitted by the DACL of the section and of its events and
  // mutex (see shm/segment_memory.h).
  std::optional<GroupId> group;
};

// What Attach() requires of the segment file before trusting it (issue 9:
// a segment planted by another user must never be adopted or used).
struct AttachOptions {
  // Required owner: the file's uid must be this one, others (not owner,
  // not group) must have no access, and the file must have one name (no
  // hard link: a link is another segment under a second name). Windows: the
  // section's owner SID, and a DACL that admits no broad group (see
  // SegmentMemory::Open). nullopt: no check (tests, tools).
  std::optional<AccountId> owner;
  // Windows: the configured group (a SID string), the only account besides
  // SYSTEM and `owner` the section's DACL may admit when `owner` is checked
  // (nullopt: any one non-broad SID, for clients that are not told the
  // group), and the group an adopting broker gives the objects it re-creates.
  // POSIX: unused (the file's own mode and gid are checked).
  // (Default member initializers keep AttachOptions{uid} and
  // {.owner = uid} free of -Wmissing-field-initializers.)
  std::optional<GroupId> group = std::nullopt;
  // Windows: this is the broker adopting the segment after a restart: it
  // re-creates a waiter event or the queue mutex that is gone with the
  // segment's security (SYSTEM, this account, `group`). Clients leave it
  // false: they never create those objects. POSIX: unused.
  bool adopt = false;
};

struct Counts {
  std::uint32_t enabled = 0;      // free + held (not retiring) + quarantined
  std::uint32_t free = 0;
  std::uint32_t held_action = 0;  // includes retiring
  std::uint32_t held_system = 0;
  std::uint32_t retiring = 0;     // held, will be disabled on release
  std::uint32_t quarantined = 0;
  // Released, cooldown not over yet (counted in `enabled` unless retiring);
  // the server may still count their sessions.
  std::uint32_t cooling = 0;
  std::uint32_t cooling_retiring = 0;  // of `cooling`: disabled when it ends
  std::uint32_t waiters = 0;
  std::uint32_t capacity = 0;     // the broker's target
};

struct OwnerHoldings {
  std::uint32_t action = 0;
  std::uint32_t system = 0;
};

class SlotTable {
 public:
  // Creates a new segment (fails with kSegmentUnavailable if it exists or
  // cannot be made; the message names the segment and the OS error).
  static Result<std::unique_ptr<SlotTable>> Create(const CreateOptions& options);
  // Maps an existing segment read-write and validates it: wrong magic,
  // version, size or checksum is kSegmentInvalid naming the segment and what
  // is wrong; a missing segment is kSegmentUnavailable. With
  // `options.owner`, a segment owned by another uid or open to others is
  // kSegmentInvalid naming its owner and mode (nothing in it is read).
  static Result<std::unique_ptr<SlotTable>> Attach(const std::string& name,
                                                   const AttachOptions& options = {});
  // Removes the segment name (mappings stay valid). OK if it does not exist.
  static Status Remove(const std::string& name);
  static bool Exists(const std::string& name);
  // Where segment `name` lives, for messages: "/dev/shm/<name>" on POSIX,
  // "Local\<name>" (or the Global\ name as given) on Windows.
  static std::string Where(const std::string& name);

  ~SlotTable();
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;

  // ---- Client side -------------------------------------------------------
  // Takes a free slot for `held_word` without waiting. Does not overtake a
  // queued waiter (returns nullopt while others wait).
  std::optional<std::uint32_t> TryAcquire(std::uint64_t held_word) noexcept {
    const std::uint32_t idx = TryAcquireIndex(held_word);
    if (idx == kNoSlot) return std::nullopt;
    return idx;
  }
  // As TryAcquire; kNoSlot if none. Inline, and the index comes back in a
  // register (an std::optional return costs a store-forwarding stall).
  std::uint32_t TryAcquireIndex(std::uint64_t held_word) noexcept {
    // Do not overtake queued waiters (bounded bypass). The seq_cst pairing with
    // the waiter's increment means a racing newcomer can pass at most one grant.
    if (header_->waiters.load(std::memory_order_seq_cst) != 0) return kNoSlot;
    return TakeFree(held_word);
  }
  static constexpr std::uint32_t kNoSlot = 0xFFFFFFFFu;
  // The longest a client waits for the queue mutex in one go.
  // 50 ms: far above any real hold (microseconds), so a holder that is
  // merely descheduled on a loaded machine rarely counts as wedged.
  static constexpr std::chrono::milliseconds kQueueLockBound{50};
  // A queued waiter wakes at least this often to pump (a pump request may
  // have met a held mutex) and to notice a wedged queue.
  static constexpr std::chrono::milliseconds kWaiterPoll{10};
  // The longest sleep between two polls for a slot while the queue is wedged.
  static constexpr std::chrono::milliseconds kDegradedPollMax{5};
  // How long after a failed lock others skip the queue and poll directly.
  static constexpr std::chrono::milliseconds kStallMemory{1000};
  // Takes a slot, waiting up to `timeout` (negative = forever) in FIFO order.
  // Never waits on the queue mutex for more than kQueueLockBound at a time:
  // if its holder is stopped (a debugger, SIGSTOP) or the mutex word is
  // garbage, the caller leaves the queue (lock-free) and polls for a slot
  // with a backoff of at most kDegradedPollMax until its own timeout; FIFO
  // order is lost while the queue is wedged, progress is not.
  // Errors: kTimeout, kCancelled (interrupt), kTooManyWaiters.
  Result<std::uint32_t> Acquire(std::uint64_t held_word, std::chrono::nanoseconds timeout,
                                WaitInterrupt* interrupt) noexcept;
  // Gives slot `index` back if it still carries `held_word` (with or without
  // the retire bit); does nothing if the broker reclaimed it meanwhile. With
  // a release cooldown (SetReleaseCooldown) the slot is cooling: unusable
  // until the cooldown has passed, because the server may still count the
  // session it ended (a retiring slot cools too, then leaves the table).
  // No system call: the deadline comes from clock_gettime (vDSO on Linux).
  void Release(std::uint32_t index, std::uint64_t held_word) noexcept {
    const std::int64_t cooldown =
        header_->release_cooldown_ns.load(std::memory_order_relaxed);
    if (cooldown > 0) {
      ReleaseCooling(index, held_word, cooldown);
    } else {
      ReleaseTo(index, held_word, kFree, kDisabled);
    }
  }
  // As Release, but the slot is free at once, whatever the cooldown: the
  // caller knows the server no longer counts the session (it confirmed the
  // end, or no session was opened).
  void ReleaseConfirmed(std::uint32_t index, std::uint64_t held_word) noexcept {
    ReleaseTo(index, held_word, kFree, kDisabled);
  }
  // True while slot `index` is in the lease region and the lease deadline
  // recorded in the segment has passed (reads CLOCK_MONOTONIC, vDSO, only if
  // a deadline is recorded and the slot is above the floor). A holder of such
  // a slot should yield it (B1: lease capacity is unusable at the deadline).
  bool InLapsedLease(std::uint32_t index) const noexcept { return !LeaseAllows(index); }
  // True while slot `index` carries `held_word` (no retire request; a grant
  // bit not cleared yet does not matter).
  bool StillHeld(std::uint32_t index, std::uint64_t held_word) const noexcept {
    return index < slot_count_ &&
           (slots_[index].word.load(std::memory_order_acquire) & ~kGrantBit) == held_word;
  }

  std::uint64_t revocation_generation() const noexcept {
    return header_->revocation_generation.load(std::memory_order_acquire);
  }
  std::uint32_t capacity() const noexcept {
    return header_->capacity.load(std::memory_order_acquire);
  }
  std::int64_t release_cooldown_ns() const noexcept {
    return std::clamp<std::int64_t>(
        header_->release_cooldown_ns.load(std::memory_order_relaxed), 0, kMaxReleaseCooldownNs);
  }
  // From the header checked at attach (or made at create), not re-read.
  std::uint64_t instance_id() const noexcept { return instance_id_; }
  std::uint32_t slot_count() const noexcept { return slot_count_; }
  const std::string& name() const noexcept { return name_; }
  std::string target() const;

  // ---- Broker side --------------------------------------------------------
  // Sets the target's release cooldown (clamped to 0..1h). Applies to
  // releases from now on; slots already cooling keep their deadlines.
  void SetReleaseCooldown(std::chrono::nanoseconds cooldown) noexcept;
  // Hands out a new owner id (never reused in this segment's life by this
  // object; 0 only when all 2^32 - 1 ids are used up: refuse then). The ids come from this object's own counter, not from
  // the segment (every client may write the segment's counter): it starts at
  // SeedOwners(), done on first use if not before, and only grows. The
  // segment's `next_owner` is written as a record for the next broker.
  std::uint32_t AllocateOwner() noexcept;
  // Seeds the owner counter from the segment: the largest of its
  // `next_owner` record and every owner id in a held slot word or a waiter
  // entry, so an id a client of an earlier broker uses is never handed out
  // again, whatever was written into the record. Never lowers the counter.
  // Then skips `gap` more ids (saturating; the record is written at once):
  // a broker adopting a segment passes kAdoptionOwnerGap, so an idle client
  // of the earlier broker (holding nothing, its id in no word) keeps an id
  // nobody else gets even if a client rewound the record meanwhile.
  // Returns the counter before the gap (the last id counted as handed out).
  std::uint32_t SeedOwners(std::uint32_t gap = 0) noexcept;
  static constexpr std::uint32_t kAdoptionOwnerGap = 1u << 16;
  // The last owner id handed out (or seen at seeding); 0 if none.
  std::uint32_t owner_high_water() const noexcept { return owner_high_; }
  // Makes `n` slots enabled (clamped to slot_count). Growing un-retires
  // retiring held and cooling slots and enables disabled ones; shrinking
  // disables free slots, then marks cooling slots retiring (nobody uses them;
  // they are disabled when their cooldown ends, and count until then as the
  // server may still count them), then held slots (action slots first) and
  // raises the revocation generation. Quarantined slots are left to
  // EndQuarantine.
  // Returns true if any held slot was asked to retire.
  bool SetCapacity(std::uint32_t n) noexcept;
  // As SetCapacity, but a shrink first asks slot `index` back if it holds
  // `held_word` (the slot of a session the server just refused: its holder
  // gives it back at once, so no live session has to yield for it, and it
  // leaves the table instead of serving the next waiter at the same level).
  bool SetCapacityRetiringFirst(std::uint32_t n, std::uint32_t index,
                                std::uint64_t held_word) noexcept;
  // True while slot `index` is held with `held_word`, retiring or not.
  bool HeldBy(std::uint32_t index, std::uint64_t held_word) const noexcept {
    return index < slot_count_ &&
           (slots_[index].word.load(std::memory_order_acquire) & ~(kGrantBit | kRetireBit)) ==
               held_word;
  }
  // Frees every slot marked with `owner` and drops the owner's queued
  // waiters (cooling slots carry no owner and are left alone)
  // waiters. With `quarantine`, every such slot (retiring ones included: the
  // server may still hold their sessions) goes to kQuarantined, else free
  // (retiring ones disabled). Returns the indices put in quarantine.
  // `freed` (optional) receives how many slots were taken from the owner.
  std::vector<std::uint32_t> Reclaim(std::uint32_t owner, bool quarantine,
                                     std::uint32_t* freed = nullptr) noexcept;
  // Ends the quarantine of slot `index`: free if capacity allows, else disabled.
  void EndQuarantine(std::uint32_t index) noexcept;
  // Puts up to `n` slots nobody holds (free ones first, then disabled ones)
  // in quarantine and returns their indices. For a broker that starts on a
  // fresh segment after an unclean end (a machine restart): the server may
  // still hold sessions of the earlier clients. Quarantined slots count
  // against capacity, so quarantining disabled slots puts the table over its
  // capacity until EndQuarantine disables them again.
  std::vector<std::uint32_t> QuarantineUnheld(std::uint32_t n) noexcept;
  // The latest quarantine end recorded in the segment (CLOCK_MONOTONIC ns, 0 =
  // unknown). A broker raises it to the end of a quarantine *before* it puts
  // slots in quarantine, so a restarted broker can end the quarantines it finds
  // by then instead of a full period after its own start.
  void RaiseQuarantineRecord(std::int64_t end_ns) noexcept;
  std::int64_t quarantine_record_ns() const noexcept {
    return header_->quarantine_until_ns.load(std::memory_order_acquire);
  }
  // Quarantined slot indices (for a restarted broker to re-quarantine).
  std::vector<std::uint32_t> QuarantinedSlots() const;
  // Serves queued waiters from free slots and cooling slots whose cooldown
  // has ended, in FIFO order, and disables ended retiring cooling slots (also
  // done by every release, and by a waiter whose timed wait ended at a
  // cooling deadline). Never waits: if the queue mutex is held, the request
  // is left in the segment and the holder pumps after it unlocks (a stopped
  // holder: the waiters' own polls take over). True if it pumped.
  bool Pump() noexcept;
  void BumpRevocationGeneration() noexcept;
  // Cluster mode: records the floor (slots at index >= floor are the lease
  // region) and the lease deadline (CLOCK_MONOTONIC ns, 0 = none). From the
  // deadline on no lease-region slot is handed out (invariant 4). No mutex.
  void SetLeaseFence(std::uint32_t floor, std::int64_t deadline_ns) noexcept;
  // Any attached process may call this (the client's watchdog does): if a
  // lease deadline is recorded and has passed at `now_ns`, raises the
  // revocation generation once for that deadline (so holders polling it
  // notice) and returns true. It changes no slot: the lease region is
  // already unusable (invariant 4), and only the broker shrinks capacity.
  bool NoteLeaseLapse(std::int64_t now_ns) noexcept;
  std::int64_t lease_deadline_ns() const noexcept {
    return header_->lease_deadline_ns.load(std::memory_order_acquire);
  }
  std::uint32_t lease_floor() const noexcept {
    return header_->floor.load(std::memory_order_acquire);
  }
  // What RepairSummary changed (bits, over both maps and both levels).
  struct SummaryRepair {
    std::uint32_t set = 0;      // stale 0s: free/cooling slots (or non-empty
                                // leaf words) whose bit was clear
    std::uint32_t cleared = 0;  // stale 1s cleared
  };
  // Recomputes the summary from the slot words (S4): sets every missing bit
  // and clears every stale one, by the same atomic steps as clients use, so
  // it races no client's legal update. Any process may call it; the broker
  // does after every Reclaim and Audit, and at adoption. O(slot_count).
  SummaryRepair RepairSummary() noexcept;
  // The summary's words (free top, free leaf, cooling top, cooling leaf), as
  // stored, and as recomputed from the slot words: equal once nobody changes
  // the table and RepairSummary (or every live operation) has run. Tests.
  struct SummaryWords {
    std::vector<std::uint64_t> free_top, free_leaf, cool_top, cool_leaf;
    bool operator==(const SummaryWords&) const = default;
  };
  SummaryWords Summary() const;
  SummaryWords SummaryFromWords() const;

  // What the broker knows, for Audit().
  struct AuditPolicy {
    std::int64_t now_ns = 0;  // CLOCK_MONOTONIC
    // Owner ids that may hold slots or wait: registered clients, owners
    // pending adoption. Every other owner in a held word or a waiting entry
    // (forged, or an id never handed out) is reclaimed.
    std::function<bool(std::uint32_t)> known_owner;
    // Slots the broker put in quarantine and will end (sorted).
    std::vector<std::uint32_t> quarantined;
    // Whether reclaimed words go to quarantine (the target's quarantine > 0).
    bool quarantine = false;
    // When a quarantine the audit starts now would end (CLOCK_MONOTONIC ns):
    // raised into the segment's record (RaiseQuarantineRecord) before the
    // first word the audit quarantines, only if it quarantines one. 0: none.
    std::int64_t quarantine_end_ns = 0;
    // The latest cooling deadline a release can have made (now + the
    // target's cooldown, or later for deadlines an earlier broker's longer
    // cooldown made); later ones are clamped to it.
    std::int64_t cooling_horizon_ns = 0;
  };
  // What Audit() found and did; every count is of slot words or entries.
  struct AuditFindings {
    // Free, cooling or held words above the capacity the broker set (FREE
    // written over DISABLED): free ones disabled, then cooling and held ones
    // retired (the holders are asked to yield).
    std::uint32_t excess_enabled = 0;
    // Held words of owners not known (forged, or ids never handed out),
    // reclaimed (quarantined per policy); `forged_owner_ids` names them.
    std::uint32_t forged_owners = 0;
    std::vector<std::uint32_t> forged_owner_ids;
    // Waiting entries of unknown owners or with a word that is no held word:
    // cancelled.
    std::uint32_t forged_waiters = 0;
    // kQuarantined words the broker did not put there: returned in
    // `quarantined` for the broker to end.
    std::uint32_t stray_quarantine = 0;
    // Slots of the broker's quarantine found free (written over): put back
    // in quarantine; or found otherwise (held, disabled): counted only.
    std::uint32_t quarantine_cleared = 0;
    // Cooling deadlines past the horizon: clamped to it.
    std::uint32_t future_cooling = 0;
    // Words that are no valid state: quarantined as held by an unknown owner.
    std::uint32_t invalid_words = 0;
    // Fewer enabled slots (quarantined ones included) than the capacity the
    // broker set (kDisabled written over free or quarantined words): enabled
    // again.
    std::uint32_t lost_capacity = 0;
    // Header fields only the broker writes (capacity, scan_bound,
    // release_cooldown_ns, floor, lease_deadline_ns, next_owner,
    // quarantine_until_ns) found
    // different from what it set: restored.
    std::uint32_t header_fields = 0;
    // An impossible waiter count or queue indices: repaired under the mutex.
    std::uint32_t queue_repairs = 0;
    // Summary bits put right (RepairSummary). Not a finding of any() on its
    // own: a client killed between a CAS and its bit leaves one.
    SummaryRepair summary;
    // Slots newly put in quarantine by this audit (stray ones included): the
    // broker must schedule their ends.
    std::vector<std::uint32_t> quarantined;
    bool any() const {
      return excess_enabled + lost_capacity + forged_owners + forged_waiters + stray_quarantine +
                 quarantine_cleared + future_cooling + invalid_words + header_fields +
                 queue_repairs >
             0;
    }
  };
  // Broker side: one pass over the slot words, the waiter entries and the
  // broker-written header fields, repairing what a client process wrote that
  // only the broker may write (see AuditFindings). Never waits (the queue
  // mutex is only try-locked). Cost: O(slot_count + waiter_capacity) loads.
  // What a group member can still do unnoticed is in docs/notes.md (e.g. FREE
  // over another owner's held word).
  AuditFindings Audit(const AuditPolicy& policy) noexcept;

  // What CheckQueue found.
  struct QueueHealth {
    enum State {
      kOk,           // the mutex was free (or recovered from a dead holder)
      kHeld,         // held by a live thread: left alone (it may be stopped)
      kReinitialised // garbage, or held by a thread that no longer exists:
                     // re-initialised and the queue repaired
    } state = kOk;
    // kHeld / kReinitialised: the holder's thread id (POSIX: the tid in the
    // lock word; Windows: the id the holder recorded beside the mutex).
    ProcessId holder_tid = 0;
    std::string detail;    // for the log: names the segment and what was found
  };
  // Broker side, never waits: looks at the queue mutex. A mutex whose lock
  // word or kind is garbage, or that names a holder thread that does not
  // exist (no robust-list recovery will ever come), is re-initialised and the
  // queue repaired; nobody can be inside it. A live holder is reported, not
  // touched (waiting clients poll meanwhile).
  QueueHealth CheckQueue() noexcept;
  // A new broker instance took over the segment.
  std::uint64_t BumpBrokerGeneration(ProcessId pid) noexcept;
  // Reads CLOCK_MONOTONIC once if it sees a cooling word: a cooling slot
  // whose cooldown has ended counts as free (or, retiring, as disabled).
  Counts Count() const noexcept;
  std::map<std::uint32_t, OwnerHoldings> HoldingsByOwner() const;

  std::uint64_t queue_grants() const noexcept;
  std::uint64_t queue_repairs() const noexcept;

 private:
  SlotTable() = default;
  static Result<std::unique_ptr<SlotTable>> Map(const std::string& name, bool create,
                                                 const CreateOptions* options,
                                                 const AttachOptions* attach = nullptr);
  std::uint32_t TakeFree(std::uint64_t held_word) noexcept {  // kNoSlot if none
    const std::uint32_t bound =
        std::min(header_->scan_bound.load(std::memory_order_acquire), slot_count_);
    if (bound == 0) return kNoSlot;
    // First probe: the slot this thread used last (one cache line when
    // uncontended, and no summary word is touched).
    if (const std::uint32_t hint = detail::tl_hint; hint < bound) {
      std::atomic<std::uint64_t>& w = slots_[hint].word;
      std::uint64_t expected = kFree;
      if (w.load(std::memory_order_relaxed) == kFree &&
          w.compare_exchange_strong(expected, held_word, std::memory_order_seq_cst)) {
        // After the CAS, not before: a slot counts as taken when its CAS
        // happened, so the deadline is checked against a clock read after it.
        if (LeaseAllows(hint)) return hint;
        return TakeAfterLapse(held_word, hint, bound);
      }
    }
    // Then the summary: a few find-first-set steps, whatever the capacity.
    return TakeFromSummary(held_word, bound);
  }
  std::uint32_t TakeFromSummary(std::uint64_t held_word, std::uint32_t bound) noexcept;
  // The summary (segment_layout.h, "The summary"). SetBit: S2 (load, OR only
  // if clear, then the top bit). Clear*Bit: S3 (AND, then re-read the slot
  // word and set the bit again if the slot is free / cooling after all).
  struct SummaryMap {
    std::atomic<std::uint64_t>* top = nullptr;
    std::atomic<std::uint64_t>* leaf = nullptr;
  };
  void SetBit(const SummaryMap& m, std::uint32_t index) const noexcept {
    std::atomic<std::uint64_t>& leaf = m.leaf[index / kSummaryBits];
    const std::uint64_t bit = 1ULL << (index % kSummaryBits);
    if ((leaf.load(std::memory_order_seq_cst) & bit) == 0) {
      leaf.fetch_or(bit, std::memory_order_seq_cst);
    }
    const std::uint32_t li = index / kSummaryBits;
    std::atomic<std::uint64_t>& top = m.top[li / kSummaryBits];
    const std::uint64_t tbit = 1ULL << (li % kSummaryBits);
    if ((top.load(std::memory_order_seq_cst) & tbit) == 0) {
      top.fetch_or(tbit, std::memory_order_seq_cst);
    }
  }
  void MarkFree(std::uint32_t index) const noexcept { SetBit(free_map_, index); }
  void MarkCooling(std::uint32_t index) const noexcept { SetBit(cool_map_, index); }
  void ClearFreeBit(std::uint32_t index) const noexcept;
  void ClearCoolingBit(std::uint32_t index) const noexcept;
  // After a clear whose re-check set a bit again: pumps if anyone waits, as
  // a release does (S3), so no waiter sleeps on a slot that is free.
  void NudgeWaitersAfterReset() const noexcept;
  // Calls `visit(index)` for every slot below `bound` whose bit is set in
  // `m`, in ascending order, until it returns true (then returns true).
  // Clears top bits over empty leaf words (S3).
  template <class F>
  bool ForEachBit(const SummaryMap& m, std::uint32_t bound, F&& visit) const noexcept;
  // Reclaim; with `repair` false neither the summary is repaired nor the
  // queue pumped (Audit does both once, after every forged owner).
  std::vector<std::uint32_t> ReclaimOwner(std::uint32_t owner, bool quarantine,
                                          std::uint32_t* freed, bool repair) noexcept;
  // Offers `take(index, word)` the slots below `bound` that look takeable
  // (word kFree, or a cooling word whose cooldown has ended and that does not
  // retire), until it returns true: from the free map, then the cooling map,
  // then (S4, at most once per kSummaryRescanNs per segment) from a rescan of
  // the words that also repairs the bits. Clears the stale bits it meets and
  // disables ended retiring cooling slots.
  template <class F>
  void FindTakeable(std::uint32_t bound, F&& take) noexcept;
  // Claims the segment's next rescan (S4) if one is due at `now_ns`.
  bool ClaimRescan(std::int64_t now_ns) noexcept;
  // True if slot `index`, just taken, may be used: no lease deadline (one
  // load: single-machine mode pays nothing more), or the slot is in the floor
  // region, or the clock (vDSO, read after the taker's CAS) is before the
  // deadline (invariant 4 of segment_layout.h).
  bool LeaseAllows(std::uint32_t index) const noexcept {
    const std::int64_t deadline = header_->lease_deadline_ns.load(std::memory_order_seq_cst);
    return deadline == 0 || LeaseAllowsSlow(index, deadline);
  }
  bool LeaseAllowsSlow(std::uint32_t index, std::int64_t deadline) const noexcept;
  // Slot `index` (held with `held_word`) was taken at or after the lease
  // deadline: gives it back and looks for a floor-region slot instead.
  std::uint32_t TakeAfterLapse(std::uint64_t held_word, std::uint32_t index,
                               std::uint32_t bound) noexcept;
  // Undoes a take of slot `index` that must not stand (no pump, no cooldown:
  // no session was opened on it).
  void UndoTake(std::uint32_t index, std::uint64_t held_word) noexcept;
  void ReleaseTo(std::uint32_t index, std::uint64_t held_word, std::uint64_t to,
                 std::uint64_t retired_to) noexcept {
    if (index >= slot_count_) return;
    std::atomic<std::uint64_t>& w = slots_[index].word;
    std::uint64_t cur = held_word;
    for (;;) {
      // A grant not picked up yet still carries kGrantBit: ours all the same.
      const std::uint64_t mine = cur & ~kGrantBit;
      if (mine == held_word) {
        if (w.compare_exchange_weak(cur, to, std::memory_order_seq_cst)) break;
      } else if (mine == (held_word | kRetireBit)) {
        // The broker shrank capacity: the slot leaves the table (B2), after
        // its cooldown if it has one.
        if (w.compare_exchange_weak(cur, retired_to, std::memory_order_seq_cst)) {
          if (retired_to == kDisabled) return;
          MarkCooling(index);  // so a taker disables it at its deadline
          return;
        }
      } else {
        return;  // reclaimed by the broker meanwhile: nothing of ours to give back
      }
    }
    // After the CAS (S2 of the summary).
    if (to != kFree) {
      MarkCooling(index);
      // A cooling slot serves nobody yet; the waiters time their own wake-up
      // for the cooldown's end (Acquire), so only a free slot is pumped.
      return;
    }
    MarkFree(index);
    if (header_->waiters.load(std::memory_order_seq_cst) != 0) Pump();
  }
  void ReleaseCooling(std::uint32_t index, std::uint64_t held_word,
                      std::int64_t cooldown) noexcept;
  // The earliest deadline of a cooling (not retiring) slot still in its
  // cooldown at `now_ns` (0 if none); `*expired` is set if some cooling
  // slot's cooldown has ended (it can serve a waiter now).
  std::int64_t EarliestCoolingDeadline(std::int64_t now_ns, bool* expired) const noexcept;
  // Takes the queue mutex within `bound` (0: try once); recovers it from a
  // dead holder (RepairQueueLocked) and repairs torn or hostile indices.
  // False: busy past the bound, or the mutex is unusable (garbage).
  // `repaired` (optional) is set if impossible indices were repaired.
  bool LockQueue(std::chrono::nanoseconds bound, bool* repaired = nullptr) noexcept;
  // Unlocks, then serves a pump request left meanwhile (RequestPump).
  void UnlockQueue() noexcept;
  void RepairQueueLocked() noexcept;
  // REQUIRES the queue mutex. Puts queue_head/queue_tail back in range if
  // they are not, and sets `waiters` to the kWaitWaiting entries in range.
  void RecountWaitersLocked() noexcept;
  // Entry `e` leaves the queue for good by CAS from Waiting or Granting to
  // Cancelled (no mutex). True if this call did it (and decremented waiters).
  bool CancelEntry(WaitEntry& e) noexcept;
  void DecrementWaiters() noexcept;
  // Polls for a slot (ignoring the queue) until `deadline`, with a bounded
  // backoff: the queue is wedged.
  Result<std::uint32_t> PollForSlot(std::uint64_t held_word,
                                    std::chrono::steady_clock::time_point deadline,
                                    WaitInterrupt* interrupt) noexcept;
  bool QueueStalledRecently(std::int64_t now_ns) const noexcept;
  // kQueueLockBound, or less if the caller's `deadline` comes sooner.
  static std::chrono::nanoseconds LockBound(std::chrono::steady_clock::time_point deadline) noexcept;
  void PumpLocked() noexcept;
  // Drops every queued entry of `owner` (no mutex; see CancelEntry).
  void CancelWaiters(std::uint32_t owner) noexcept;
  // Broker only (one thread): no mutex, see invariant 5.
  bool SetCapacityUnlocked(std::uint32_t n) noexcept;
  // Moves enabled free slots out of the lease region into disabled slots of
  // the floor region, so the floor is what stays usable at a lapse.
  void ArrangeFloorLow() noexcept;
  // Clears kGrantBit from slot `index` if it still carries held_word|kGrantBit
  // (kRetireBit kept); gives up if the broker reclaimed the slot meanwhile.
  void PickUpGrant(std::uint32_t index, std::uint64_t held_word) noexcept;
  std::uint32_t CountEnabled() const noexcept;

  std::string name_;
  // Declaration order is destruction order reversed: the wait words and the
  // lock go before the memory they point into.
  std::unique_ptr<SegmentMemory> memory_;
  std::unique_ptr<QueueLock> queue_lock_;
  std::unique_ptr<WaitWordRange> wait_words_;
  void* base_ = nullptr;
  std::size_t size_ = 0;
  SegmentHeader* header_ = nullptr;
  WaitEntry* entries_ = nullptr;
  SlotCell* slots_ = nullptr;
  SummaryMap free_map_;  // the summary, in the segment (segment_layout.h)
  SummaryMap cool_map_;
  std::uint32_t summary_leaf_words_ = 0;  // from slot_count_ (trusted)
  std::uint32_t slot_count_ = 0;       // copied at attach: never trust shm for bounds
  std::uint32_t waiter_capacity_ = 0;  // ditto
  std::uint64_t instance_id_ = 0;      // ditto
  // Broker side, in this process's memory (the segment's copies are records
  // any client may overwrite; Audit restores them from these).
  std::uint32_t owner_high_ = 0;
  bool owners_seeded_ = false;
  std::optional<std::uint32_t> capacity_set_;       // last SetCapacity
  std::optional<std::int64_t> cooldown_set_;        // last SetReleaseCooldown
  std::optional<std::pair<std::uint32_t, std::int64_t>> fence_set_;  // last SetLeaseFence
  std::int64_t quarantine_record_set_ = 0;          // highest RaiseQuarantineRecord
};

// MonotonicNs(), the clock of cooling and lease deadlines shared by every
// process of the machine, is in shm/monotonic_clock.h.

// The segment name for a broker's shm prefix and a target: "dsb-<prefix>-<target>".
std::string SegmentName(const std::string& prefix, const std::string& target);

}  // namespace dsb::shm

#endif  // DSB_SHM_SLOT_TABLE_H_
