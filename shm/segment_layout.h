// The shared-memory slot table's binary layout. Shared by the broker and every
// client process, possibly of different builds: the layout version and the
// checksum of the static header fields are checked on every attach.
//
// NEVER reorder or resize fields without bumping kLayoutVersion.
//
// Segment = SegmentHeader | WaitEntry[waiter_capacity] | SlotCell[slot_count]
//           | the summary (SummaryBytes(slot_count), see "The summary" below)
//
// A slot word (SlotCell::word) is one of:
//   kDisabled (0)      not part of the capacity right now (zero-filled default)
//   kFree (1)          enabled and free: a client may CAS it to its held word
//   kQuarantined (2)   reclaimed from a dead owner; the broker re-enables it
//                      after the target's quarantine (the server may still
//                      hold the dead client's session)
//   held word          kHeldBit | [kRetireBit] | [kSystemBit] | [kGrantBit] |
//                      owner id (32 bits)
//   cooling word       kCoolingBit | [kRetireBit] | deadline (CLOCK_MONOTONIC
//                      ns, kCoolDeadlineMask), kHeldBit clear: released, but
//                      the server may still count the session until the
//                      deadline (the target's release_cooldown). Usable again
//                      once the deadline has passed: whoever takes it CASes
//                      the cooling word itself, so no one has to turn it back
//                      into kFree. With kRetireBit the slot leaves the table
//                      at the deadline (it was held, or cooling, when the
//                      broker shrank capacity): it becomes kDisabled then.
//                      Every bit pattern with kHeldBit clear and kCoolingBit
//                      set is a valid cooling word (hostile writes included);
//                      a deadline more than kMaxReleaseCooldownNs after the
//                      reader's clock is taken as expired (garbage).
//
// kGrantBit marks a slot handed to a queued waiter by the granter (PumpLocked)
// that the waiter has not picked up yet. Only a grant writes it, so after a
// granter dies mid-grant the queue repair can tell "this entry's grant went
// through" (word == held|kGrantBit, ignoring kRetireBit) from "a sibling thread
// of the same owner took the slot on the fast path" (plain held word). The
// waiter clears the bit with a CAS once it sees kWaitGranted. A word with the
// bit is held by its owner for every purpose (IsHeld, OwnerOf, Release,
// StillHeld, Reclaim, Count, capacity changes).
//
// Invariants (checked by tests/shm/slot_table_test.cc):
//  1. Only the broker moves a word between kDisabled, kFree and kQuarantined,
//     and sets or clears kRetireBit. Clients move kFree -> held (acquire),
//     held -> kFree and held|kRetireBit -> kDisabled (release), and the
//     waiter queue hands kFree -> held(waiter)|kGrantBit under the queue
//     mutex; the waiter then clears kGrantBit (keeping kRetireBit).
//     With a release cooldown, release moves held -> cooling and
//     held|kRetireBit -> cooling|kRetireBit; an expired cooling word moves
//     like kFree (to held, or held|kGrantBit by a grant), an expired
//     cooling|kRetireBit to kDisabled (by anyone who sees it).
//  1b. Counting: a cooling word counts as enabled (like kFree: it becomes
//     usable without the broker), a cooling|kRetireBit word does not (like a
//     retiring held word). The broker's lease report counts both as held:
//     the server may still count their sessions.
//  1a. `waiters` equals the number of kWaitWaiting entries with a ticket in
//     [queue_head, queue_tail), and 0 <= queue_tail - queue_head <=
//     waiter_capacity. Whoever finds it otherwise under the queue mutex (a
//     dead holder, hostile writes) repairs the indices and recounts.
//  1c. Waiter states move only by CAS: Waiting -> Granting (a granter, under
//     the mutex), Granting -> Granted | Waiting (the same granter),
//     Waiting | Granting -> Cancelled (anyone, no mutex: the waiter giving
//     up, the broker dropping a dead owner's entries). Whoever moves an entry
//     out of Waiting/Granting for good (to Granted or Cancelled) decrements
//     `waiters` (saturating at 0). A granter whose Granting -> Granted CAS
//     fails gives the slot back, so a cancelled entry never keeps one.
//  4. Lease region (cluster mode, B1). Slots at index >= `floor` are lease
//     capacity. While lease_deadline_ns != 0 and CLOCK_MONOTONIC is at or past
//     it, no path hands one out: TakeFree/TakeCooled and a queued grant read
//     the clock after their CAS and give the slot straight back if the
//     deadline had passed, so every lease-region slot in use was taken before
//     the deadline (the H assumption covers it from then on), whether the
//     broker runs or not. A held lease-region slot past the deadline should
//     yield (Permit::ShouldYield). Only the broker changes `floor` and the
//     deadline; no client ever clears the deadline.
//  5. No capacity change needs the queue mutex: only the broker (one thread)
//     moves words between kDisabled/kFree/kQuarantined and sets kRetireBit,
//     so the count it reads cannot be changed under it by another capacity
//     change; clients only move kFree <-> held, which keeps the count. The
//     mutex guards the queue indices alone, and nobody waits on it
//     unboundedly: the broker only try-locks, clients lock with a bound and
//     then poll (see SlotTable::Acquire).
//  2. Every transition is a single CAS, so a process killed at any instruction
//     leaves a slot either untaken or marked with its owner id (crash-atomic
//     attribution); the broker frees every word carrying a dead owner's id.
//  3. Owner ids are never reused within a segment's life (next_owner only grows).
//
// The summary (issue 14): where to look, never what is true. Two two-level
// bitmaps beside the slot words, so a taker finds a free slot with a few
// find-first-set steps instead of a scan of the table:
//   free map:    leaf bit i   "slot i may be kFree"
//   cooling map: leaf bit i   "slot i may hold a cooling word"
//   each map's top bit j      "leaf word j may be non-zero"
// Region: free_top[T] | free_leaf[W] | cool_top[T] | cool_leaf[W], each
// array padded to a cache line, W = ceil(slot_count / 64), T = ceil(W / 64).
//  S1. The slot word is the only truth. A bit decides nothing: every taker
//      still CASes the word from the state it read, and keeps every check the
//      scan made (index below scan_bound, the lease fence of invariant 4 after
//      its CAS, the cooling deadline). A set bit over a slot in any other
//      state (a "stale 1") costs one load and is cleared by whoever meets it.
//  S2. Whoever makes a word kFree sets its free bit after the CAS that did
//      it (release, undo, the broker enabling, ending a quarantine,
//      reclaiming); whoever makes it cooling sets its cooling bit after the
//      CAS. Then the top bit. Each is a load, and an atomic OR only if the
//      bit is clear. A successful take clears nothing (the next taker that
//      meets the stale 1 does): the uncontended path and a release of a
//      slot whose bit is still set write no summary word.
//  S3. Clearing is lazy and re-checked: clear the bit (atomic AND), then
//      re-read the slot word (or, for a top bit, the leaf word) and set the
//      bit again if the state came back meanwhile. With S2's set-after-CAS
//      and every summary access seq_cst, a live process never leaves a
//      kFree or cooling slot with its bit (or its leaf's top bit) clear for
//      longer than the gap between a CAS and the set that follows it.
//  S4. A "stale 0" (a free or cooling slot whose bit is clear) exists only
//      after a process died (or was stopped) between a CAS and its set, or
//      between a clear and its re-check, or after a hostile write. Repairs:
//      the broker's RepairSummary (on every Reclaim after a death, every
//      Audit, adoption, capacity changes) recomputes the bits from the slot
//      words; and a taker or pump that finds nothing through the summary
//      rescans the table itself, at most once per kSummaryRescanNs for the
//      whole segment (header summary_scan_ns, claimed by CAS), setting
//      every bit it finds missing. So a stale 0 delays nobody by more than
//      that interval, even with no broker.
//  S5. Disabled, quarantined and held slots have no bit to keep: they are
//      never offered by the summary except as stale 1s, which the taker
//      clears after one load; cooling slots are offered only through the
//      cooling map, and only once their deadline has passed.
#ifndef DSB_SHM_SEGMENT_LAYOUT_H_
#define DSB_SHM_SEGMENT_LAYOUT_H_

#ifndef _WIN32
#include <pthread.h>
#endif

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace dsb::shm {

inline constexpr std::uint64_t kMagic = 0x314C42545344534AULL;  // "JSDSTBL1"
// 2: kGrantBit in slot words. 3: cooling words and release_cooldown_ns (an
// older client would misread a cooling word as garbage and never reuse it).
// 4: the lease region (slots at index >= `floor` are unusable once
// lease_deadline_ns has passed: an older client would keep taking them), the
// lock-free waiter states (an entry moves Waiting -> Granting -> Granted or
// -> Cancelled by CAS only: an older granter stores and would grant a
// cancelled entry), pump_pending, queue_stall_ns and lapse_noted_ns.
// 5: the summary bitmaps after the slot words and summary_scan_ns (an older
// client would neither keep the summary nor look at it).
inline constexpr std::uint32_t kLayoutVersion = 5;
inline constexpr std::size_t kTargetNameCapacity = 64;
inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::uint32_t kMaxSlots = 65535;
inline constexpr std::uint32_t kDefaultWaiterCapacity = 1024;

inline constexpr std::uint64_t kDisabled = 0;
inline constexpr std::uint64_t kFree = 1;
inline constexpr std::uint64_t kQuarantined = 2;
inline constexpr std::uint64_t kHeldBit = 1ULL << 63;
inline constexpr std::uint64_t kRetireBit = 1ULL << 62;
inline constexpr std::uint64_t kSystemBit = 1ULL << 61;
inline constexpr std::uint64_t kGrantBit = 1ULL << 60;  // granted, not picked up yet
inline constexpr std::uint64_t kOwnerMask = 0xFFFFFFFFULL;
// Only with kHeldBit clear (same bit as kSystemBit in a held word).
inline constexpr std::uint64_t kCoolingBit = 1ULL << 61;
inline constexpr std::uint64_t kCoolDeadlineMask = (1ULL << 60) - 1;  // ~36 years of uptime
// The longest release cooldown (the config allows 0..1h). Also the bound on
// how far ahead a cooling deadline may lie before it is taken as garbage.
inline constexpr std::int64_t kMaxReleaseCooldownNs = 3600LL * 1000 * 1000 * 1000;

constexpr std::uint64_t HeldWord(std::uint32_t owner, bool system) {
  return kHeldBit | (system ? kSystemBit : 0) | owner;
}
constexpr bool IsHeld(std::uint64_t w) { return (w & kHeldBit) != 0; }
constexpr std::uint32_t OwnerOf(std::uint64_t w) {
  return static_cast<std::uint32_t>(w & kOwnerMask);
}
constexpr bool IsCooling(std::uint64_t w) {
  return (w & (kHeldBit | kCoolingBit)) == kCoolingBit;
}
// REQUIRES: deadline_ns >= 0 (clamped to the mask, which no real clock reaches).
constexpr std::uint64_t CoolingWord(std::int64_t deadline_ns, bool retire) {
  const std::uint64_t d = static_cast<std::uint64_t>(deadline_ns);
  return kCoolingBit | (retire ? kRetireBit : 0) |
         (d > kCoolDeadlineMask ? kCoolDeadlineMask : d);
}
constexpr std::int64_t CoolingDeadline(std::uint64_t w) {
  return static_cast<std::int64_t>(w & kCoolDeadlineMask);
}
// True once cooling word `w` may be reused (or, with kRetireBit, disabled)
// at `now_ns`. A deadline further ahead than any cooldown can make is garbage
// (a hostile or torn write): treated as expired so it cannot pin the slot.
constexpr bool CoolingExpired(std::uint64_t w, std::int64_t now_ns) {
  const std::int64_t d = CoolingDeadline(w);
  return d <= now_ns || d - now_ns > kMaxReleaseCooldownNs;
}

// The waiter queue's lock, stored in the header (see shm/queue_lock.h). On
// POSIX it is the robust process-shared pthread mutex itself. On Windows the
// lock is a named kernel mutex beside the segment, and this storage only
// records which thread holds it (written by the holder; a hint for reports
// and for refusing a recursive lock, never trusted for safety). Segments are
// never shared between operating systems, so the two layouts need not match;
// the Linux one is unchanged.
#ifdef _WIN32
struct QueueLockStorage {
  std::atomic<std::uint32_t> holder_pid;
  std::atomic<std::uint32_t> holder_tid;
  unsigned char reserved[32];
};
#else
using QueueLockStorage = pthread_mutex_t;
#endif

// Waiter queue entry states.
enum WaitState : std::uint32_t {
  kWaitEmpty = 0,
  kWaitWaiting = 1,   // in the queue, no slot yet
  kWaitGranting = 2,  // a granter is handing it `slot` (repaired after a crash)
  kWaitGranted = 3,   // slot `slot` is marked with this waiter's held word
  kWaitCancelled = 4, // gave up (timeout, cancel, owner died); skipped by the granter
};

struct alignas(kCacheLine) WaitEntry {
  std::atomic<std::uint32_t> futex;  // 0 = sleep, 1 = look at state
  std::atomic<std::uint32_t> state;  // WaitState
  std::uint64_t held_word;           // the word the granter writes into the slot
  std::uint64_t ticket;              // arrival order
  std::uint32_t slot;                // valid in kWaitGranting / kWaitGranted
  std::uint32_t pad;
};

struct alignas(kCacheLine) SlotCell {
  std::atomic<std::uint64_t> word;
};

struct SegmentHeader {
  // --- static part: written once at creation, covered by layout_checksum ---
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t header_size;
  std::uint64_t total_size;
  std::uint32_t slot_count;
  std::uint32_t waiter_capacity;
  std::uint64_t instance_id;  // random per creation: tells a re-created segment apart
  char target[kTargetNameCapacity];
  std::uint64_t layout_checksum;

  // --- broker-written, read by clients ---
  alignas(kCacheLine) std::atomic<std::uint64_t> revocation_generation;
  std::atomic<std::uint64_t> broker_generation;  // bumped by every broker start
  std::atomic<std::uint32_t> capacity;           // enabled slots the broker aims for
  std::atomic<std::uint32_t> scan_bound;         // no enabled slot at or above this index
  std::atomic<std::uint32_t> next_owner;         // last owner id handed out
  std::atomic<std::uint32_t> broker_pid;
  // Cluster mode (B1): slots at index >= `floor` are the lease region, usable
  // only before lease_deadline_ns on CLOCK_MONOTONIC (the same clock for every
  // process of the machine); 0 = no lease (single-machine mode, or floor
  // only). Every "CLOCK_MONOTONIC ns" in this header means shm::MonotonicNs
  // (shm/monotonic_clock.h): CLOCK_MONOTONIC on POSIX, QueryPerformanceCounter
  // on Windows, both system-wide. Enforced by every taker at the deadline itself (invariant 4), so a
  // hung or dead broker cannot leave lease capacity usable.
  std::atomic<std::int64_t> lease_deadline_ns;
  std::atomic<std::uint32_t> floor;
  // Latest end (CLOCK_MONOTONIC ns) of any quarantine a broker started in
  // this segment; 0 = unknown (a segment made before this field existed: it
  // sits in what was padding, so the layout is unchanged). Raised before a
  // slot is quarantined, so no quarantined slot's end is later than this.
  std::atomic<std::int64_t> quarantine_until_ns;
  // The lease deadline whose lapse some process has already announced by
  // raising revocation_generation (so it is raised once per lapse).
  std::atomic<std::int64_t> lapse_noted_ns;
  // When a client last failed to get the queue mutex within its bound
  // (CLOCK_MONOTONIC ns, 0 = not lately): for a while others poll for a slot
  // instead of queueing behind a stopped holder. Cleared by a locker.
  std::atomic<std::int64_t> queue_stall_ns;
  // When some process last rescanned the slot words because the summary
  // offered nothing (CLOCK_MONOTONIC ns; S4 of "The summary"): claimed by
  // CAS, so one rescan per kSummaryRescanNs serves the whole segment.
  std::atomic<std::int64_t> summary_scan_ns;

  // --- hot: read by every acquire and release ---
  alignas(kCacheLine) std::atomic<std::uint32_t> waiters;  // entries in kWaitWaiting
  // Set by whoever wants a pump but could not get the queue mutex at once;
  // the mutex holder pumps again after it unlocks (see SlotTable::RequestPump).
  std::atomic<std::uint32_t> pump_pending;
  // How long a released slot stays cooling (ns, 0 = none); written by the
  // broker only (SetReleaseCooldown), read by every Release. Clamped to
  // 0..kMaxReleaseCooldownNs by the readers.
  std::atomic<std::int64_t> release_cooldown_ns;

  // --- the waiter queue, guarded by queue_mutex (robust, process-shared) ---
  alignas(kCacheLine) QueueLockStorage queue_mutex;
  std::uint64_t queue_head;  // oldest ticket possibly still waiting
  std::uint64_t queue_tail;  // next ticket to hand out
  std::uint64_t grants;      // waiters served through the queue (statistics)
  std::uint64_t repairs;     // times the mutex was recovered from a dead holder
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

inline constexpr std::size_t HeaderBytes() {
  return (sizeof(SegmentHeader) + kCacheLine - 1) / kCacheLine * kCacheLine;
}
// The summary's geometry (see "The summary" above).
inline constexpr std::uint32_t kSummaryBits = 64;
inline constexpr std::int64_t kSummaryRescanNs = 10'000'000;  // 10 ms
inline constexpr std::uint32_t SummaryLeafWords(std::uint32_t slot_count) {
  return (slot_count + kSummaryBits - 1) / kSummaryBits;
}
inline constexpr std::uint32_t SummaryTopWords(std::uint32_t slot_count) {
  return (SummaryLeafWords(slot_count) + kSummaryBits - 1) / kSummaryBits;
}
inline constexpr std::size_t LineRound(std::size_t bytes) {
  return (bytes + kCacheLine - 1) / kCacheLine * kCacheLine;
}
// Byte offsets inside the summary region.
inline constexpr std::size_t SummaryTopBytes(std::uint32_t slot_count) {
  return LineRound(std::size_t{SummaryTopWords(slot_count)} * sizeof(std::uint64_t));
}
inline constexpr std::size_t SummaryLeafBytes(std::uint32_t slot_count) {
  return LineRound(std::size_t{SummaryLeafWords(slot_count)} * sizeof(std::uint64_t));
}
inline constexpr std::size_t SummaryBytes(std::uint32_t slot_count) {
  return 2 * (SummaryTopBytes(slot_count) + SummaryLeafBytes(slot_count));
}
inline constexpr std::size_t SegmentBytes(std::uint32_t slot_count,
                                          std::uint32_t waiter_capacity) {
  return HeaderBytes() + std::size_t{waiter_capacity} * sizeof(WaitEntry) +
         std::size_t{slot_count} * sizeof(SlotCell) + SummaryBytes(slot_count);
}
// kMaxSlots slots: 1024 leaf words and 16 top words per map.
static_assert(SummaryTopWords(kMaxSlots) == 16);

}  // namespace dsb::shm

#endif  // DSB_SHM_SEGMENT_LAYOUT_H_
