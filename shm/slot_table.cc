#include "shm/slot_table.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <random>

#include "common/check.h"
#include "shm/futex.h"
#include "shm/queue_lock.h"
#include "shm/segment_memory.h"
#include "shm/segment_validate.h"

namespace dsb::shm {

namespace {

constexpr auto kSeqCst = std::memory_order_seq_cst;
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;

// The shortest timed wait for a cooling slot: bounds how often a waiter can
// wake when a deadline it sees is already past but unusable (a word another
// process keeps rewriting), so hostile words cannot make it spin.
constexpr std::int64_t kMinCoolingWaitNs = 50'000;

// Names of the kernel objects beside a segment (Windows: the waiter events
// and the queue mutex; unused on POSIX), from the segment's instance id, so
// a segment re-created under the same name never shares them with mappings
// of the old one.
std::string ObjectStem(const SegmentMemory& memory, std::uint64_t instance_id) {
  char id[24];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(instance_id));
  return memory.object_namespace() + "dsb-" + id;
}

}  // namespace

std::string SegmentName(const std::string& prefix, const std::string& target) {
  return "dsb-" + prefix + "-" + target;
}

SlotTable::~SlotTable() = default;

std::string SlotTable::target() const {
  return std::string(header_->target, strnlen(header_->target, kTargetNameCapacity));
}

bool SlotTable::Exists(const std::string& name) { return SegmentMemory::Exists(name); }

Status SlotTable::Remove(const std::string& name) { return SegmentMemory::Remove(name); }

std::string SlotTable::Where(const std::string& name) { return SegmentMemory::Where(name); }

Result<std::unique_ptr<SlotTable>> SlotTable::Create(const CreateOptions& options) {
  if (options.slot_count == 0 || options.slot_count > kMaxSlots) {
    return Status{Errc::kInvalidArgument, "segment " + options.name + ": slot_count " +
                                              std::to_string(options.slot_count) +
                                              " is outside 1.." + std::to_string(kMaxSlots)};
  }
  if (options.waiter_capacity == 0 || options.waiter_capacity > 65536) {
    return Status{Errc::kInvalidArgument, "segment " + options.name + ": bad waiter_capacity"};
  }
  if (options.target.size() >= kTargetNameCapacity) {
    return Status{Errc::kInvalidArgument, "target name too long: " + options.target};
  }
  return Map(options.name, true, &options);
}

Result<std::unique_ptr<SlotTable>> SlotTable::Attach(const std::string& name,
                                                     const AttachOptions& options) {
  return Map(name, false, nullptr, &options);
}

Result<std::unique_ptr<SlotTable>> SlotTable::Map(const std::string& name, bool create,
                                                  const CreateOptions* options,
                                                  const AttachOptions* attach) {
  auto table = std::unique_ptr<SlotTable>(new SlotTable());
  table->name_ = name;
  {
    auto memory = create ? SegmentMemory::Create(
                               name, SegmentBytes(options->slot_count, options->waiter_capacity),
                               options->group)
                         : attach != nullptr
                               ? SegmentMemory::Open(name, attach->owner, attach->group,
                                                     attach->adopt)
                               : SegmentMemory::Open(name, std::nullopt);
    if (!memory.ok()) return memory.status();
    table->memory_ = std::move(memory).value();
  }
  table->base_ = table->memory_->address();
  table->size_ = table->memory_->size();
  auto* base = static_cast<char*>(table->base_);
  table->header_ = reinterpret_cast<SegmentHeader*>(base);
  SegmentHeader& h = *table->header_;
  std::uint32_t slot_count = create ? options->slot_count : 0;
  std::uint32_t waiter_capacity = create ? options->waiter_capacity : 0;
  const ObjectMode mode = create ? ObjectMode::kCreate
                         : attach != nullptr && attach->adopt ? ObjectMode::kAdopt
                                                              : ObjectMode::kOpen;
  // The kernel objects beside the segment (Windows: the queue mutex and the
  // waiter events; POSIX: the mutex in the header). The creator makes them
  // before the checksum makes the header valid to attachers.
  const auto make_objects = [&](std::uint64_t instance_id, std::uint32_t waiters) -> Status {
    auto lock = QueueLock::Make(&h.queue_mutex,
                                ObjectStem(*table->memory_, instance_id) + "-q",
                                table->memory_->object_security(), mode);
    if (!lock.ok()) {
      return Status{lock.status().code(), "segment " + name + ": " + lock.status().message()};
    }
    table->queue_lock_ = std::move(lock).value();
    auto* entries = reinterpret_cast<WaitEntry*>(base + HeaderBytes());
    auto words = WaitWordRange::Make(&entries[0].futex, sizeof(WaitEntry), waiters,
                                     ObjectStem(*table->memory_, instance_id) + "-w",
                                     table->memory_->object_security(), mode);
    if (!words.ok()) {
      return Status{words.status().code(), "segment " + name + ": " + words.status().message()};
    }
    table->wait_words_ = std::move(words).value();
    return Status::Ok();
  };

  if (create) {
    std::random_device rd;
    h.magic = kMagic;
    h.layout_version = kLayoutVersion;
    h.header_size = static_cast<std::uint32_t>(sizeof(SegmentHeader));
    h.total_size = table->size_;
    h.slot_count = options->slot_count;
    h.waiter_capacity = options->waiter_capacity;
    h.instance_id = (std::uint64_t{rd()} << 32) ^ rd() ^
                    static_cast<std::uint64_t>(
                        std::chrono::steady_clock::now().time_since_epoch().count());
    std::memset(h.target, 0, sizeof h.target);
    std::memcpy(h.target, options->target.data(), options->target.size());
    // Before the checksum makes the header valid to attachers.
    if (Status st = make_objects(h.instance_id, options->waiter_capacity); !st.ok()) return st;
    h.queue_head = h.queue_tail = 0;
    h.layout_checksum = LayoutChecksum(h);
    table->instance_id_ = h.instance_id;
  } else {
    // The header is untrusted (every client maps the segment read-write):
    // checked on one snapshot, and only the checked geometry is used below.
    auto geometry = ValidateSegmentHeader(
        {static_cast<const unsigned char*>(table->base_), table->size_}, name);
    if (!geometry.ok()) return geometry.status();
    slot_count = geometry->slot_count;
    waiter_capacity = geometry->waiter_capacity;
    table->instance_id_ = geometry->instance_id;
    if (Status st = make_objects(table->instance_id_, waiter_capacity); !st.ok()) return st;
  }
  table->slot_count_ = slot_count;
  table->waiter_capacity_ = waiter_capacity;
  table->entries_ = reinterpret_cast<WaitEntry*>(base + HeaderBytes());
  table->slots_ = reinterpret_cast<SlotCell*>(base + HeaderBytes() +
                                              std::size_t{waiter_capacity} * sizeof(WaitEntry));
  {
    // The summary, after the slot words; its size from the checked geometry.
    char* at = reinterpret_cast<char*>(table->slots_ + slot_count);
    const auto words = [&](std::size_t bytes) {
      auto* p = reinterpret_cast<std::atomic<std::uint64_t>*>(at);
      at += bytes;
      return p;
    };
    table->free_map_.top = words(SummaryTopBytes(slot_count));
    table->free_map_.leaf = words(SummaryLeafBytes(slot_count));
    table->cool_map_.top = words(SummaryTopBytes(slot_count));
    table->cool_map_.leaf = words(SummaryLeafBytes(slot_count));
    table->summary_leaf_words_ = SummaryLeafWords(slot_count);
  }
  if (create) {
    table->owners_seeded_ = true;  // a new segment: no id handed out yet
    table->SetReleaseCooldown(options->release_cooldown);
    table->SetCapacity(options->capacity);
  }
  return table;
}

// ---- Client side -----------------------------------------------------------

void SlotTable::ReleaseCooling(std::uint32_t index, std::uint64_t held_word,
                               std::int64_t cooldown) noexcept {
  const std::int64_t deadline = MonotonicNs() + std::min(cooldown, kMaxReleaseCooldownNs);
  ReleaseTo(index, held_word, CoolingWord(deadline, false), CoolingWord(deadline, true));
}

// ---- The summary (segment_layout.h, "The summary") -------------------------

void SlotTable::NudgeWaitersAfterReset() const noexcept {
  // The release that made the slot free saw its bit still set (before our
  // AND), so it wrote nothing, and may have seen no waiter; a waiter that
  // queued meanwhile searched while the bit was clear. Acting as a releaser
  // here (bit set, then waiters loaded, against the waiter's waiters++ then
  // search) closes that window (review of issue 14, F1). Pump only try-locks:
  // under the queue mutex it leaves a request its holder serves on unlock.
  // The table itself is never const; these helpers are const only because
  // they touch nothing but atomics.
  if (header_->waiters.load(kSeqCst) != 0) const_cast<SlotTable*>(this)->Pump();
}

void SlotTable::ClearFreeBit(std::uint32_t index) const noexcept {
  std::atomic<std::uint64_t>& leaf = free_map_.leaf[index / kSummaryBits];
  leaf.fetch_and(~(1ULL << (index % kSummaryBits)), kSeqCst);
  // S3: a release between our look at the word and the AND set the bit
  // before we cleared it; it is free again now, so the bit goes back.
  if (slots_[index].word.load(kSeqCst) == kFree) {
    MarkFree(index);
    NudgeWaitersAfterReset();
  }
}

void SlotTable::ClearCoolingBit(std::uint32_t index) const noexcept {
  std::atomic<std::uint64_t>& leaf = cool_map_.leaf[index / kSummaryBits];
  leaf.fetch_and(~(1ULL << (index % kSummaryBits)), kSeqCst);
  if (IsCooling(slots_[index].word.load(kSeqCst))) {
    MarkCooling(index);
    NudgeWaitersAfterReset();
  }
}

template <class F>
bool SlotTable::ForEachBit(const SummaryMap& m, std::uint32_t bound, F&& visit) const noexcept {
  const std::uint32_t leaves =
      std::min(summary_leaf_words_, (bound + kSummaryBits - 1) / kSummaryBits);
  const std::uint32_t tops = (leaves + kSummaryBits - 1) / kSummaryBits;
  for (std::uint32_t ti = 0; ti < tops; ++ti) {
    std::uint64_t tv = m.top[ti].load(kSeqCst);
    while (tv != 0) {
      const std::uint32_t li = ti * kSummaryBits + static_cast<std::uint32_t>(std::countr_zero(tv));
      tv &= tv - 1;
      if (li >= leaves) return false;  // ascending: the rest is out of bounds too
      std::uint64_t lv = m.leaf[li].load(kSeqCst);
      if (lv == 0) {
        // A stale top bit: clear, re-check the leaf, set again if it filled.
        std::atomic<std::uint64_t>& top = m.top[ti];
        const std::uint64_t tbit = 1ULL << (li % kSummaryBits);
        top.fetch_and(~tbit, kSeqCst);
        if (m.leaf[li].load(kSeqCst) != 0) {
          top.fetch_or(tbit, kSeqCst);
          NudgeWaitersAfterReset();  // as in ClearFreeBit
        }
        continue;
      }
      while (lv != 0) {
        const std::uint32_t idx =
            li * kSummaryBits + static_cast<std::uint32_t>(std::countr_zero(lv));
        lv &= lv - 1;
        if (idx >= bound) return false;
        if (visit(idx)) return true;
      }
    }
  }
  return false;
}

bool SlotTable::ClaimRescan(std::int64_t now_ns) noexcept {
  std::int64_t last = header_->summary_scan_ns.load(kRelaxed);
  // A stamp from the future (hostile, or another clock) does not block.
  if (last != 0 && now_ns >= last && now_ns - last < kSummaryRescanNs) return false;
  return header_->summary_scan_ns.compare_exchange_strong(last, std::max<std::int64_t>(now_ns, 1),
                                                          kSeqCst);
}

template <class F>
void SlotTable::FindTakeable(std::uint32_t bound, F&& take) noexcept {
  const bool done = ForEachBit(free_map_, bound, [&](std::uint32_t i) {
    const std::uint64_t v = slots_[i].word.load(kSeqCst);
    if (v == kFree) return take(i, v);
    ClearFreeBit(i);  // a stale 1 (S1)
    return false;
  });
  if (done) return;
  std::int64_t now = 0;
  const auto takeable_cooling = [&](std::uint32_t i, std::uint64_t v) {
    if (now == 0) now = MonotonicNs();  // once, and only if something cools
    if (!CoolingExpired(v, now)) return false;
    if ((v & kRetireBit) != 0) {
      slots_[i].word.compare_exchange_strong(v, kDisabled, kSeqCst);  // leaves the table
      return false;
    }
    return true;
  };
  if (ForEachBit(cool_map_, bound, [&](std::uint32_t i) {
        const std::uint64_t v = slots_[i].word.load(kSeqCst);
        if (!IsCooling(v)) {
          ClearCoolingBit(i);
          return false;
        }
        return takeable_cooling(i, v) && take(i, v);
      })) {
    return;
  }
  // Nothing through the summary. A stale 0 (S4) must not starve anyone until
  // the broker repairs it: one rescan per kSummaryRescanNs for the segment.
  if (now == 0) now = MonotonicNs();
  if (!ClaimRescan(now)) return;
  bool taken = false;
  for (std::uint32_t i = 0; i < bound; ++i) {
    const std::uint64_t v = slots_[i].word.load(kSeqCst);
    if (v == kFree) {
      MarkFree(i);
      if (!taken) taken = take(i, v);
    } else if (IsCooling(v)) {
      MarkCooling(i);
      if (!taken && takeable_cooling(i, v)) taken = take(i, v);
    }
  }
}

std::uint32_t SlotTable::TakeFromSummary(std::uint64_t held_word, std::uint32_t bound) noexcept {
  std::uint32_t out = kNoSlot;
  FindTakeable(bound, [&](std::uint32_t i, std::uint64_t v) {
    if (!slots_[i].word.compare_exchange_strong(v, held_word, kSeqCst)) return false;
    // After the CAS: see TakeFree.
    if (LeaseAllows(i)) {
      detail::tl_hint = i;
      out = i;
    } else {
      out = TakeAfterLapse(held_word, i, bound);
    }
    return true;
  });
  return out;
}

SlotTable::SummaryRepair SlotTable::RepairSummary() noexcept {
  SummaryRepair r;
  const auto has = [](const SummaryMap& m, std::uint32_t i) {
    return (m.leaf[i / kSummaryBits].load(kSeqCst) >> (i % kSummaryBits) & 1) != 0;
  };
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t v = slots_[i].word.load(kSeqCst);
    const bool is_free = v == kFree;
    const bool cooling = IsCooling(v);
    if (is_free != has(free_map_, i)) {
      if (is_free) {
        MarkFree(i);
        ++r.set;
      } else {
        ClearFreeBit(i);
        ++r.cleared;
      }
    }
    if (cooling != has(cool_map_, i)) {
      if (cooling) {
        MarkCooling(i);
        ++r.set;
      } else {
        ClearCoolingBit(i);
        ++r.cleared;
      }
    }
  }
  const std::uint32_t tops = (summary_leaf_words_ + kSummaryBits - 1) / kSummaryBits;
  for (const SummaryMap* m : {&free_map_, &cool_map_}) {
    // Bits past the table (hostile writes): no slot, no leaf word.
    if (const std::uint32_t tail = slot_count_ % kSummaryBits; tail != 0) {
      const std::uint64_t keep = (1ULL << tail) - 1;
      std::atomic<std::uint64_t>& last = m->leaf[summary_leaf_words_ - 1];
      if ((last.load(kSeqCst) & ~keep) != 0) {
        last.fetch_and(keep, kSeqCst);
        ++r.cleared;
      }
    }
    if (const std::uint32_t tail = summary_leaf_words_ % kSummaryBits; tail != 0) {
      const std::uint64_t keep = (1ULL << tail) - 1;
      std::atomic<std::uint64_t>& last = m->top[tops - 1];
      if ((last.load(kSeqCst) & ~keep) != 0) {
        last.fetch_and(keep, kSeqCst);
        ++r.cleared;
      }
    }
    for (std::uint32_t li = 0; li < summary_leaf_words_; ++li) {
      std::atomic<std::uint64_t>& top = m->top[li / kSummaryBits];
      const std::uint64_t tbit = 1ULL << (li % kSummaryBits);
      const bool full = m->leaf[li].load(kSeqCst) != 0;
      const bool marked = (top.load(kSeqCst) & tbit) != 0;
      if (full && !marked) {
        top.fetch_or(tbit, kSeqCst);
        ++r.set;
      } else if (!full && marked) {
        top.fetch_and(~tbit, kSeqCst);
        if (m->leaf[li].load(kSeqCst) != 0) top.fetch_or(tbit, kSeqCst);  // S3
        ++r.cleared;
      }
    }
  }
  return r;
}

SlotTable::SummaryWords SlotTable::Summary() const {
  SummaryWords s;
  const std::uint32_t tops = (summary_leaf_words_ + kSummaryBits - 1) / kSummaryBits;
  for (std::uint32_t i = 0; i < tops; ++i) {
    s.free_top.push_back(free_map_.top[i].load(kSeqCst));
    s.cool_top.push_back(cool_map_.top[i].load(kSeqCst));
  }
  for (std::uint32_t i = 0; i < summary_leaf_words_; ++i) {
    s.free_leaf.push_back(free_map_.leaf[i].load(kSeqCst));
    s.cool_leaf.push_back(cool_map_.leaf[i].load(kSeqCst));
  }
  return s;
}

SlotTable::SummaryWords SlotTable::SummaryFromWords() const {
  SummaryWords s;
  const std::uint32_t tops = (summary_leaf_words_ + kSummaryBits - 1) / kSummaryBits;
  s.free_top.assign(tops, 0);
  s.cool_top.assign(tops, 0);
  s.free_leaf.assign(summary_leaf_words_, 0);
  s.cool_leaf.assign(summary_leaf_words_, 0);
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t v = slots_[i].word.load(kSeqCst);
    const std::uint64_t bit = 1ULL << (i % kSummaryBits);
    const std::uint64_t tbit = 1ULL << (i / kSummaryBits % kSummaryBits);
    if (v == kFree) {
      s.free_leaf[i / kSummaryBits] |= bit;
      s.free_top[i / kSummaryBits / kSummaryBits] |= tbit;
    } else if (IsCooling(v)) {
      s.cool_leaf[i / kSummaryBits] |= bit;
      s.cool_top[i / kSummaryBits / kSummaryBits] |= tbit;
    }
  }
  return s;
}

bool SlotTable::LeaseAllowsSlow(std::uint32_t index, std::int64_t deadline) const noexcept {
  if (index < header_->floor.load(kSeqCst)) return true;
  return MonotonicNs() < deadline;
}

void SlotTable::UndoTake(std::uint32_t index, std::uint64_t held_word) noexcept {
  if (index >= slot_count_) return;
  std::atomic<std::uint64_t>& w = slots_[index].word;
  std::uint64_t cur = w.load(kAcquire);
  for (;;) {
    const std::uint64_t mine = cur & ~kGrantBit;
    std::uint64_t to = kFree;
    if (mine == (held_word | kRetireBit)) {
      to = kDisabled;  // the broker shrank meanwhile: the slot leaves the table
    } else if (mine != held_word) {
      return;  // reclaimed meanwhile
    }
    if (w.compare_exchange_weak(cur, to, kSeqCst)) {
      if (to == kFree) MarkFree(index);  // S2
      return;
    }
  }
}

std::uint32_t SlotTable::TakeAfterLapse(std::uint64_t held_word, std::uint32_t index,
                                        std::uint32_t bound) noexcept {
  UndoTake(index, held_word);
  // Only the floor region is usable now: the summary below the floor.
  const std::uint32_t floor = std::min(header_->floor.load(kSeqCst), bound);
  std::uint32_t out = kNoSlot;
  FindTakeable(floor, [&](std::uint32_t i, std::uint64_t v) {
    if (!slots_[i].word.compare_exchange_strong(v, held_word, kSeqCst)) return false;
    if (LeaseAllows(i)) {
      detail::tl_hint = i;
      out = i;
    } else {
      UndoTake(i, held_word);  // the floor was lowered meanwhile
    }
    return true;
  });
  return out;
}

std::int64_t SlotTable::EarliestCoolingDeadline(std::int64_t now_ns,
                                                bool* expired) const noexcept {
  const std::uint32_t bound = std::min(header_->scan_bound.load(kAcquire), slot_count_);
  std::int64_t earliest = 0;
  *expired = false;
  // The cooling map, not the table: a cooling slot it misses (a stale 0)
  // is found by the rescan of the pump this waiter runs at most one cooldown
  // later (see Acquire).
  (void)ForEachBit(cool_map_, bound, [&](std::uint32_t i) {
    const std::uint64_t v = slots_[i].word.load(kAcquire);
    if (!IsCooling(v) || (v & kRetireBit) != 0) return false;
    if (CoolingExpired(v, now_ns)) {
      *expired = true;
    } else if (earliest == 0 || CoolingDeadline(v) < earliest) {
      earliest = CoolingDeadline(v);
    }
    return false;
  });
  return earliest;
}

Result<std::uint32_t> SlotTable::Acquire(std::uint64_t held_word, std::chrono::nanoseconds timeout,
                                         WaitInterrupt* interrupt) noexcept {
  if (auto idx = TryAcquire(held_word)) return *idx;
  if (timeout.count() == 0) return Status{Errc::kCapacityExhausted, ""};
  const auto deadline = timeout.count() < 0
                            ? std::chrono::steady_clock::time_point::max()
                            : std::chrono::steady_clock::now() + timeout;
  // Someone found the queue wedged lately (a stopped or hostile holder of its
  // mutex): do not queue behind it, poll. Else lock with a bound.
  if (QueueStalledRecently(MonotonicNs())) return PollForSlot(held_word, deadline, interrupt);
  if (const auto bound = LockBound(deadline); !LockQueue(bound)) {
    // Others skip the queue for a while only after a full bounded wait.
    if (bound >= kQueueLockBound) {
      header_->queue_stall_ns.store(std::max<std::int64_t>(MonotonicNs(), 1), kSeqCst);
    }
    return PollForSlot(held_word, deadline, interrupt);
  }
  SegmentHeader& h = *header_;
  if (h.waiters.load(kRelaxed) == 0) {
    if (const std::uint32_t idx = TakeFree(held_word); idx != kNoSlot) {
      UnlockQueue();
      return idx;
    }
  }
  // Drop finished entries at the head so their places can be reused. Bounded
  // by waiter_capacity: LockQueue put the indices in range, and a hostile
  // writer must not make us spin under the mutex.
  for (std::uint32_t n = 0; n < waiter_capacity_ && h.queue_head < h.queue_tail; ++n) {
    const std::uint32_t st = entries_[h.queue_head % waiter_capacity_].state.load(kAcquire);
    if (st == kWaitWaiting || st == kWaitGranting) break;
    ++h.queue_head;
  }
  // An entry still kWaitGranted belongs to a waiter that was served but has
  // not run yet to pick up its slot: skip its place (the ticket becomes a
  // hole that the head loop and PumpLocked pass over) instead of failing.
  for (std::uint32_t n = 0;
       n < waiter_capacity_ && h.queue_tail - h.queue_head < waiter_capacity_ &&
       entries_[h.queue_tail % waiter_capacity_].state.load(kAcquire) == kWaitGranted;
       ++n) {
    ++h.queue_tail;
  }
  WaitEntry& e = entries_[h.queue_tail % waiter_capacity_];
  const std::uint32_t prev = e.state.load(kAcquire);
  if (h.queue_tail - h.queue_head >= waiter_capacity_ ||
      (prev != kWaitEmpty && prev != kWaitCancelled)) {
    UnlockQueue();
    return Status{Errc::kTooManyWaiters, "segment " + name_ + ": " +
                                             std::to_string(waiter_capacity_) +
                                             " threads already wait"};
  }
  const std::uint64_t ticket = h.queue_tail;
  e.held_word = held_word;
  e.ticket = ticket;
  e.slot = 0;
  e.futex.store(0, kRelaxed);
  // Tail first, then the state, then the count: a process killed before the
  // state store leaves a place that is not kWaitWaiting (passed over), one
  // killed after it leaves the mutex to the repair, which recounts `waiters`.
  h.queue_tail = ticket + 1;
  e.state.store(kWaitWaiting, kSeqCst);
  h.waiters.fetch_add(1, kSeqCst);
  PumpLocked();  // a slot freed before we queued is ours now
  UnlockQueue();

  const bool armed = interrupt == nullptr || interrupt->Arm(&e.futex);
  Status failure;
  bool pumped = false;
  bool wedged = false;
  for (;;) {
    e.futex.store(0, kSeqCst);
    // seq_cst: pairs with the granter's state CAS then futex store, so
    // either we see kWaitGranted here or FutexWait sees futex == 1.
    const std::uint32_t st = e.state.load(kSeqCst);
    // e.ticket: written before the state by whoever last queued in this
    // place, so it is stable once we see the state; a different ticket means
    // our entry was dropped (broker reclaim, queue repair) and the place
    // reused.
    if (st == kWaitGranted && e.ticket == ticket) break;
    const auto now = std::chrono::steady_clock::now();
    if (!armed || (interrupt != nullptr && interrupt->interrupted())) {
      failure = Status{Errc::kCancelled, ""};
    } else if (st == kWaitCancelled || (st == kWaitGranted && e.ticket != ticket)) {
      failure = Status{Errc::kCancelled,
                       "segment " + name_ + ": the wait was dropped (owner reclaimed or queue repaired)"};
    } else if (now >= deadline || wedged) {
      failure = Status{Errc::kTimeout, ""};
    }
    if (!failure.ok()) {
      // Leave the queue without the mutex (invariant 1c): a granter that is
      // mid-grant gives the slot back when its own CAS fails.
      if (e.ticket == ticket && !CancelEntry(e) && e.state.load(kSeqCst) == kWaitGranted &&
          e.ticket == ticket) {
        failure = Status::Ok();
        break;  // granted just before we gave up: take it
      }
      (void)Pump();  // our place no longer holds up the head
      if (interrupt != nullptr && armed) interrupt->Disarm(&e.futex);
      if (wedged && failure.code() == Errc::kTimeout && now < deadline) {
        // The queue's mutex is held by someone who does not let go: poll.
        return PollForSlot(held_word, deadline, interrupt);
      }
      return failure;
    }
    auto left = deadline == std::chrono::steady_clock::time_point::max()
                    ? std::chrono::nanoseconds(-1)
                    : std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    // Cooling slots become usable when their cooldown ends, with no release
    // to pump the queue then: the waiters time their own wake-up. Each
    // sleeps at most until the earliest cooling deadline it sees, and at
    // most one cooldown when none cools (a slot released later cannot end
    // its cooldown sooner than that), then pumps. No thread per slot, and no
    // change at all while the target has no cooldown and nothing cools.
    const std::int64_t cooldown = release_cooldown_ns();
    bool expired = false;
    const std::int64_t mono = MonotonicNs();
    const std::int64_t earliest = EarliestCoolingDeadline(mono, &expired);
    if (expired && !pumped) {
      pumped = true;  // once per wake: a hostile word must not make us spin
      (void)Pump();
      continue;
    }
    pumped = false;
    std::int64_t cool_wait = -1;
    if (earliest != 0) {
      cool_wait = earliest - mono;
    } else if (cooldown > 0 || expired) {
      cool_wait = cooldown > 0 ? cooldown : kMinCoolingWaitNs;
    }
    if (cool_wait >= 0) {
      cool_wait = std::max(cool_wait, kMinCoolingWaitNs);
      if (left.count() < 0 || cool_wait < left.count()) left = std::chrono::nanoseconds(cool_wait);
    }
    // Wake at least every kWaiterPoll: a release that met a held mutex left
    // its pump request behind, and a holder that never lets go (stopped,
    // garbage) must not keep us queued past a bounded lock attempt.
    const bool polling = left.count() < 0 || left > kWaiterPoll;
    if (polling) left = kWaiterPoll;
    FutexWait(&e.futex, 0, left);
    if (polling && e.futex.load(kSeqCst) == 0 && e.state.load(kSeqCst) == kWaitWaiting &&
        !Pump()) {
      // The mutex is held: give its holder a bounded time, then leave.
      if (const auto bound = LockBound(deadline); LockQueue(bound)) {
        PumpLocked();
        UnlockQueue();
      } else {
        if (bound >= kQueueLockBound) {
          header_->queue_stall_ns.store(std::max<std::int64_t>(MonotonicNs(), 1), kSeqCst);
        }
        wedged = true;
      }
    }
  }
  if (interrupt != nullptr && armed) interrupt->Disarm(&e.futex);
  const std::uint32_t idx = e.slot;
  PickUpGrant(idx, held_word);
  e.state.store(kWaitEmpty, kRelease);
  detail::tl_hint = idx;
  return idx;
}

std::chrono::nanoseconds SlotTable::LockBound(
    std::chrono::steady_clock::time_point deadline) noexcept {
  // Never past the caller's own timeout (at least a try).
  const auto left = deadline - std::chrono::steady_clock::now();
  return std::max(std::chrono::nanoseconds(0),
                  std::min<std::chrono::nanoseconds>(kQueueLockBound, left));
}

bool SlotTable::QueueStalledRecently(std::int64_t now_ns) const noexcept {
  const std::int64_t at = header_->queue_stall_ns.load(kRelaxed);
  constexpr std::int64_t kMemory =
      std::chrono::duration_cast<std::chrono::nanoseconds>(kStallMemory).count();
  return at != 0 && now_ns >= at && now_ns - at < kMemory;
}

Result<std::uint32_t> SlotTable::PollForSlot(std::uint64_t held_word,
                                             std::chrono::steady_clock::time_point deadline,
                                             WaitInterrupt* interrupt) noexcept {
  // A word of our own to sleep on, so a cancel wakes us at once.
  std::atomic<std::uint32_t> wake{0};
  const bool armed = interrupt == nullptr || interrupt->Arm(&wake);
  std::chrono::nanoseconds sleep = std::chrono::microseconds(100);
  Result<std::uint32_t> out = Status{Errc::kTimeout, ""};
  for (;;) {
    // Ignores `waiters`: the queued ones are stuck behind the same holder.
    if (const std::uint32_t idx = TakeFree(held_word); idx != kNoSlot) {
      out = idx;
      break;
    }
    if (!armed || (interrupt != nullptr && interrupt->interrupted())) {
      out = Status{Errc::kCancelled, ""};
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    FutexWait(&wake, 0, std::min<std::chrono::nanoseconds>(sleep, deadline - now));
    sleep = std::min<std::chrono::nanoseconds>(sleep * 2, kDegradedPollMax);
  }
  if (interrupt != nullptr && armed) interrupt->Disarm(&wake);
  return out;
}

void SlotTable::PickUpGrant(std::uint32_t index, std::uint64_t held_word) noexcept {
  if (index >= slot_count_) return;
  std::atomic<std::uint64_t>& w = slots_[index].word;
  const std::uint64_t granted = held_word | kGrantBit;
  std::uint64_t cur = w.load(kAcquire);
  // Keep kRetireBit (the broker may have asked the slot back meanwhile); stop
  // if the word is no longer our grant (reclaimed: StillHeld will say so).
  while ((cur & ~kRetireBit) == granted) {
    if (w.compare_exchange_weak(cur, cur & ~kGrantBit, kSeqCst)) return;
  }
}

// ---- Waiter queue ----------------------------------------------------------

bool SlotTable::LockQueue(std::chrono::nanoseconds bound, bool* repaired) noexcept {
  const QueueLock::Outcome rc = queue_lock_->Lock(bound);
  if (rc == QueueLock::Outcome::kOwnerDied) {
    // A process died holding the queue: make the queue consistent again.
    RepairQueueLocked();
    queue_lock_->MarkConsistent();
    ++header_->repairs;
  } else if (rc != QueueLock::Outcome::kLocked) {
    return false;  // busy past the bound, or unusable (CheckQueue repairs that)
  } else {
    const SegmentHeader& h = *header_;
    if (h.queue_tail < h.queue_head || h.queue_tail - h.queue_head > waiter_capacity_) {
      RepairQueueLocked();  // torn or hostile indices: never loop over them
      if (repaired != nullptr) *repaired = true;
    }
  }
  if (header_->queue_stall_ns.load(kRelaxed) != 0) header_->queue_stall_ns.store(0, kRelaxed);
  return true;
}

void SlotTable::UnlockQueue() noexcept {
  queue_lock_->Unlock();
  // A pump asked for while we held the mutex (Pump's seq_cst flag store
  // before its trylock pairs with this load after our unlock: one of the two
  // sees the other). A few rounds at most; a newer holder serves the rest.
  for (int round = 0; round < 4 && header_->pump_pending.load(kSeqCst) != 0; ++round) {
    if (!LockQueue(std::chrono::nanoseconds(0))) return;
    header_->pump_pending.store(0, kSeqCst);
    PumpLocked();
    queue_lock_->Unlock();
  }
}

void SlotTable::RepairQueueLocked() noexcept {
  SegmentHeader& h = *header_;
  if (h.queue_tail < h.queue_head || h.queue_tail - h.queue_head > waiter_capacity_) {
    h.queue_head = h.queue_tail;  // indices torn: start an empty queue
  }
  const std::uint64_t in_range = h.queue_tail - h.queue_head;
  const std::uint32_t head_pos = static_cast<std::uint32_t>(h.queue_head % waiter_capacity_);
  for (std::uint32_t i = 0; i < waiter_capacity_; ++i) {
    WaitEntry& e = entries_[i];
    const bool queued = (i + waiter_capacity_ - head_pos) % waiter_capacity_ < in_range;
    std::uint32_t st = e.state.load(kAcquire);
    if (st == kWaitGranting) {
      // The granter died between marking the entry and finishing the grant.
      // Only a grant writes held|kGrantBit, so that word (the broker may have
      // added kRetireBit) says the slot was handed over; the plain held word
      // is a sibling thread of the same owner that took the slot itself. A
      // slot that was cooling when the grant began still carries its cooling
      // word (or another taker's word) if the CAS did not happen: not handed.
      const bool handed =
          e.slot < slot_count_ &&
          (slots_[e.slot].word.load(kAcquire) & ~kRetireBit) == (e.held_word | kGrantBit);
      const std::uint32_t to = handed ? kWaitGranted : queued ? kWaitWaiting : kWaitCancelled;
      // CAS: the waiter or the broker may cancel it meanwhile (invariant 1c).
      if (e.state.compare_exchange_strong(st, to, kSeqCst)) {
        st = to;
      } else if (handed) {
        UndoTake(e.slot, e.held_word);  // cancelled: nobody will pick it up
      }
    } else if (st == kWaitWaiting && !queued) {
      // Outside [head, tail) nobody would ever serve it (tail is bumped before
      // an entry becomes kWaitWaiting): let its waiter go.
      if (e.state.compare_exchange_strong(st, kWaitCancelled, kSeqCst)) st = kWaitCancelled;
    }
    // Wake every served or dropped waiter: a granter may have died between
    // its state store and its futex wake.
    if (st == kWaitGranted || (st == kWaitCancelled && !queued)) {
      e.futex.store(1, kSeqCst);
      FutexWake(&e.futex, 1);
    }
  }
  RecountWaitersLocked();
}

void SlotTable::RecountWaitersLocked() noexcept {
  SegmentHeader& h = *header_;
  if (h.queue_tail < h.queue_head || h.queue_tail - h.queue_head > waiter_capacity_) {
    h.queue_head = h.queue_tail;
  }
  std::uint32_t waiting = 0;
  for (std::uint64_t t = h.queue_head; t != h.queue_tail; ++t) {
    if (entries_[t % waiter_capacity_].state.load(kAcquire) == kWaitWaiting) ++waiting;
  }
  h.waiters.store(waiting, kSeqCst);
}

void SlotTable::DecrementWaiters() noexcept {
  std::uint32_t n = header_->waiters.load(kAcquire);
  while (n != 0 && !header_->waiters.compare_exchange_weak(n, n - 1, kSeqCst)) {
  }
}

bool SlotTable::CancelEntry(WaitEntry& e) noexcept {
  std::uint32_t st = e.state.load(kAcquire);
  while (st == kWaitWaiting || st == kWaitGranting) {
    if (e.state.compare_exchange_weak(st, kWaitCancelled, kSeqCst)) {
      DecrementWaiters();
      return true;
    }
  }
  return false;
}

void SlotTable::PumpLocked() noexcept {
  SegmentHeader& h = *header_;
  // Each round serves or passes the head entry, or finds the lease region
  // lapsed mid-grant and looks again below the floor, so waiter_capacity
  // rounds cover the queue (LockQueue keeps tail - head <= waiter_capacity).
  for (std::uint32_t round = 0; round < waiter_capacity_ && h.queue_head < h.queue_tail;
       ++round) {
    WaitEntry& e = entries_[h.queue_head % waiter_capacity_];
    if (e.state.load(kAcquire) != kWaitWaiting) {
      ++h.queue_head;
      continue;
    }
    std::uint32_t bound = std::min(h.scan_bound.load(kAcquire), slot_count_);
    // Past the lease deadline only the floor region serves (invariant 4).
    if (const std::int64_t lease_end = h.lease_deadline_ns.load(kSeqCst);
        lease_end != 0 && MonotonicNs() >= lease_end) {
      bound = std::min(bound, h.floor.load(kSeqCst));
    }
    enum { kNone, kGranted, kGone, kLapsed } outcome = kNone;
    FindTakeable(bound, [&](std::uint32_t i, std::uint64_t expected) {
      std::atomic<std::uint64_t>& w = slots_[i].word;
      e.slot = i;
      std::uint32_t st = kWaitWaiting;
      if (!e.state.compare_exchange_strong(st, kWaitGranting, kSeqCst)) {
        outcome = kGone;  // cancelled under us: the next round passes it
        return true;
      }
      // held|kGrantBit, not the plain word: see RepairQueueLocked.
      if (w.compare_exchange_strong(expected, e.held_word | kGrantBit, kSeqCst)) {
        st = kWaitGranting;
        if (!LeaseAllows(i)) {
          // The deadline passed during this grant: the slot goes back, and
          // the lease region serves nobody from now on (the next round).
          UndoTake(i, e.held_word);
          outcome = e.state.compare_exchange_strong(st, kWaitWaiting, kSeqCst) ? kLapsed : kGone;
          return true;
        }
        if (e.state.compare_exchange_strong(st, kWaitGranted, kSeqCst)) {
          DecrementWaiters();
          ++h.grants;
          ++h.queue_head;
          e.futex.store(1, kSeqCst);
          FutexWake(&e.futex, 1);
          outcome = kGranted;
          return true;
        }
        UndoTake(i, e.held_word);  // cancelled during the grant: give it back
        outcome = kGone;
        return true;
      }
      st = kWaitGranting;  // a fast-path taker won this one
      if (!e.state.compare_exchange_strong(st, kWaitWaiting, kSeqCst)) {
        outcome = kGone;
        return true;
      }
      return false;
    });
    if (outcome == kNone) return;  // no slot for the head: nobody behind it either
  }
}

bool SlotTable::Pump() noexcept {
  header_->pump_pending.store(1, kSeqCst);
  if (!LockQueue(std::chrono::nanoseconds(0))) return false;  // the holder pumps on unlock
  header_->pump_pending.store(0, kSeqCst);
  PumpLocked();
  UnlockQueue();
  return true;
}

void SlotTable::CancelWaiters(std::uint32_t owner) noexcept {
  for (std::uint32_t i = 0; i < waiter_capacity_; ++i) {
    WaitEntry& e = entries_[i];
    std::uint32_t st = e.state.load(kAcquire);
    if (st == kWaitEmpty || st == kWaitCancelled || OwnerOf(e.held_word) != owner) continue;
    if (st == kWaitWaiting || st == kWaitGranting) {
      if (CancelEntry(e)) {
        e.futex.store(1, kSeqCst);  // a live thread of the owner stops waiting
        FutexWake(&e.futex, 1);
      }
    } else if (st == kWaitGranted) {
      // Its slot is reclaimed by the caller; the place can be reused.
      e.state.compare_exchange_strong(st, kWaitEmpty, kSeqCst);
    }
  }
}

SlotTable::QueueHealth SlotTable::CheckQueue() noexcept {
  QueueHealth r;
  const QueueLock::Inspection in = queue_lock_->Inspect();
  if (in.state == QueueLock::Inspection::kAcquired ||
      in.state == QueueLock::Inspection::kAcquiredOwnerDied) {
    if (in.state == QueueLock::Inspection::kAcquiredOwnerDied) {
      RepairQueueLocked();
      queue_lock_->MarkConsistent();
      ++header_->repairs;
    }
    RepairQueueLocked();  // indices, Granting entries, the waiter count
    UnlockQueue();
    return r;
  }
  r.holder_tid = in.holder;
  if (in.state == QueueLock::Inspection::kHeld) {
    r.state = QueueHealth::kHeld;
    r.detail = "segment " + name_ + ": the waiter queue's mutex is held by thread " +
               std::to_string(in.holder) + (in.holder_stopped ? " (stopped)" : "") +
               "; left alone: waiting clients poll for slots until it lets go";
    return r;
  }
  // Nobody can be inside: re-make the mutex and repair what it guarded.
  queue_lock_->Reinit();
  if (LockQueue(std::chrono::nanoseconds(0))) {
    RepairQueueLocked();
    ++header_->repairs;
    UnlockQueue();
  }
  r.state = QueueHealth::kReinitialised;
  r.detail = "segment " + name_ + ": the waiter queue's mutex was unusable: " + in.why +
             "; re-initialised it and repaired the queue";
  return r;
}

// ---- Broker side -----------------------------------------------------------

std::uint32_t SlotTable::SeedOwners(std::uint32_t gap) noexcept {
  std::uint32_t high = std::max(owner_high_, header_->next_owner.load(kAcquire));
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t w = slots_[i].word.load(kAcquire);
    if (IsHeld(w)) high = std::max(high, OwnerOf(w));
  }
  for (std::uint32_t i = 0; i < waiter_capacity_; ++i) {
    const std::uint32_t st = entries_[i].state.load(kAcquire);
    if (st != kWaitEmpty && IsHeld(entries_[i].held_word)) {
      high = std::max(high, OwnerOf(entries_[i].held_word));
    }
  }
  owners_seeded_ = true;
  if (gap == 0) {
    owner_high_ = high;
    return high;
  }
  owner_high_ = high > kOwnerMask - 1 - gap ? static_cast<std::uint32_t>(kOwnerMask - 1)
                                           : high + gap;
  owner_high_ = std::max(owner_high_, high);
  header_->next_owner.store(owner_high_, kSeqCst);
  return high;
}

std::uint32_t SlotTable::AllocateOwner() noexcept {
  if (!owners_seeded_) (void)SeedOwners();
  // 2^32 - 1 registrations in one segment's life: wrapping would reuse ids,
  // so the counter saturates (the broker refuses to register on kNoOwner).
  if (owner_high_ == kOwnerMask) return 0;
  const std::uint32_t id = ++owner_high_;
  // The record for the next broker (and for tools); never trusted back.
  std::uint32_t rec = header_->next_owner.load(kAcquire);
  while (rec < id && !header_->next_owner.compare_exchange_weak(rec, id, kSeqCst)) {
  }
  if (rec > id) header_->next_owner.store(id, kSeqCst);  // a hostile raise: undo it
  return id;
}

std::uint32_t SlotTable::CountEnabled() const noexcept {
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t w = slots_[i].word.load(kAcquire);
    // A cooling slot is enabled (it comes back without the broker) unless
    // it is retiring; past its deadline it is the same.
    if (w == kFree || w == kQuarantined || ((IsHeld(w) || IsCooling(w)) && (w & kRetireBit) == 0)) {
      ++n;
    }
  }
  return n;
}

// Capacity changes (SetCapacity, EndQuarantine, Reclaim, QuarantineUnheld)
// take no lock (invariant 5 of segment_layout.h): each counts enabled slots
// and then acts on the count, which is sound because only the broker, on one
// thread, moves words between kDisabled, kFree and kQuarantined or sets
// kRetireBit; the fast path only moves kFree <-> held, which leaves the count
// unchanged. Waiters are then served by Pump(), which never waits.
bool SlotTable::SetCapacity(std::uint32_t n) noexcept {
  const bool revoked = SetCapacityUnlocked(n);
  (void)Pump();
  return revoked;
}

bool SlotTable::SetCapacityRetiringFirst(std::uint32_t n, std::uint32_t index,
                                         std::uint64_t held_word) noexcept {
  bool revoked = false;
  if (index < slot_count_ && IsHeld(held_word) && CountEnabled() > std::min(n, slot_count_)) {
    std::uint64_t w = slots_[index].word.load(kAcquire);
    while ((w & ~kGrantBit) == held_word) {
      if (slots_[index].word.compare_exchange_weak(w, w | kRetireBit, kSeqCst)) {
        revoked = true;
        break;
      }
    }
  }
  revoked = SetCapacityUnlocked(n) || revoked;
  (void)Pump();
  return revoked;
}

bool SlotTable::SetCapacityUnlocked(std::uint32_t n) noexcept {
  n = std::min(n, slot_count_);
  capacity_set_ = n;
  header_->capacity.store(n, kSeqCst);
  std::uint32_t enabled = CountEnabled();
  bool revoked = false;
  if (enabled < n) {
    for (std::uint32_t i = 0; i < slot_count_ && enabled < n; ++i) {
      std::uint64_t w = slots_[i].word.load(kAcquire);
      while ((IsHeld(w) || IsCooling(w)) && (w & kRetireBit) != 0) {
        if (slots_[i].word.compare_exchange_weak(w, w & ~kRetireBit, kSeqCst)) {
          ++enabled;
          break;
        }
      }
    }
    std::uint32_t bound = header_->scan_bound.load(kAcquire);
    for (std::uint32_t i = 0; i < slot_count_ && enabled < n; ++i) {
      std::uint64_t expected = kDisabled;
      if (slots_[i].word.compare_exchange_strong(expected, kFree, kSeqCst)) {
        ++enabled;
        bound = std::max(bound, i + 1);
        MarkFree(i);  // after scan_bound below covers it: takers check both
      }
    }
    header_->scan_bound.store(bound, kSeqCst);
  } else if (enabled > n) {
    for (std::uint32_t i = slot_count_; i-- > 0 && enabled > n;) {
      std::uint64_t expected = kFree;
      if (slots_[i].word.compare_exchange_strong(expected, kDisabled, kSeqCst)) {
        --enabled;
        ClearFreeBit(i);
      }
    }
    // Then cooling slots: nobody holds them, so retiring them costs no one a
    // session. They stay counted by the lease report until their cooldown
    // ends (the server may still count them), then leave the table.
    for (std::uint32_t i = slot_count_; i-- > 0 && enabled > n;) {
      std::uint64_t w = slots_[i].word.load(kAcquire);
      while (IsCooling(w) && (w & kRetireBit) == 0) {
        if (slots_[i].word.compare_exchange_weak(w, w | kRetireBit, kSeqCst)) {
          --enabled;
          break;
        }
      }
    }
    // Ask held slots back, action slots before system slots, highest first.
    for (int pass = 0; pass < 2 && enabled > n; ++pass) {
      for (std::uint32_t i = slot_count_; i-- > 0 && enabled > n;) {
        std::uint64_t w = slots_[i].word.load(kAcquire);
        for (;;) {
          if (!IsHeld(w) || (w & kRetireBit) != 0) break;
          if (pass == 0 && (w & kSystemBit) != 0) break;
          if (slots_[i].word.compare_exchange_weak(w, w | kRetireBit, kSeqCst)) {
            --enabled;
            revoked = true;
            break;
          }
        }
      }
    }
    if (revoked) BumpRevocationGeneration();
  }
  ArrangeFloorLow();
  return revoked;
}

void SlotTable::ArrangeFloorLow() noexcept {
  const std::uint32_t floor = std::min(header_->floor.load(kAcquire), slot_count_);
  std::uint32_t j = slot_count_;  // next lease-region slot to look at, from the top
  std::uint32_t bound = header_->scan_bound.load(kAcquire);
  for (std::uint32_t i = 0; i < floor && j > floor; ++i) {
    if (slots_[i].word.load(kAcquire) != kDisabled) continue;
    while (j > floor) {
      std::uint64_t expected = kFree;
      if (slots_[--j].word.compare_exchange_strong(expected, kDisabled, kSeqCst)) {
        ClearFreeBit(j);
        // Disable first, enable second: the count dips by one, never rises.
        expected = kDisabled;
        if (slots_[i].word.compare_exchange_strong(expected, kFree, kSeqCst)) MarkFree(i);
        bound = std::max(bound, i + 1);
        break;
      }
    }
  }
  header_->scan_bound.store(bound, kSeqCst);
}

std::vector<std::uint32_t> SlotTable::Reclaim(std::uint32_t owner, bool quarantine,
                                              std::uint32_t* freed) noexcept {
  return ReclaimOwner(owner, quarantine, freed, /*repair=*/true);
}

std::vector<std::uint32_t> SlotTable::ReclaimOwner(std::uint32_t owner, bool quarantine,
                                                   std::uint32_t* freed, bool repair) noexcept {
  std::vector<std::uint32_t> quarantined;
  std::uint32_t count = 0;
  // Entries first (no mutex, invariant 1c): a grant racing this either
  // completed (its slot carries the owner and is taken below) or fails its
  // state CAS and gives the slot back.
  CancelWaiters(owner);
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    std::uint64_t w = slots_[i].word.load(kAcquire);
    while (IsHeld(w) && OwnerOf(w) == owner) {
      // A retiring slot is quarantined too: the server may still hold its
      // session. EndQuarantine disables it if the table is over capacity.
      const std::uint64_t next =
          quarantine ? kQuarantined : ((w & kRetireBit) != 0 ? kDisabled : kFree);
      if (slots_[i].word.compare_exchange_weak(w, next, kSeqCst)) {
        ++count;
        if (next == kQuarantined) quarantined.push_back(i);
        break;
      }
    }
  }
  // The owner is dead: it may have died between a CAS and its summary bit
  // (S4), on any slot. Put the summary right before the pump uses it (Audit
  // repairs once after all its forged owners instead: review of issue 14, F5).
  if (freed != nullptr) *freed = count;
  if (!repair) return quarantined;
  (void)RepairSummary();
  (void)Pump();
  return quarantined;
}

void SlotTable::EndQuarantine(std::uint32_t index) noexcept {
  if (index >= slot_count_) return;
  // The capacity this broker set, not the segment's copy (clients may write it).
  const bool over =
      CountEnabled() > (capacity_set_ ? *capacity_set_ : header_->capacity.load(kAcquire));
  std::uint64_t expected = kQuarantined;
  const bool freed =
      slots_[index].word.compare_exchange_strong(expected, over ? kDisabled : kFree, kSeqCst) &&
      !over;
  if (freed) {
    MarkFree(index);
    (void)Pump();
  }
}

void SlotTable::SetReleaseCooldown(std::chrono::nanoseconds cooldown) noexcept {
  cooldown_set_ = std::clamp<std::int64_t>(cooldown.count(), 0, kMaxReleaseCooldownNs);
  header_->release_cooldown_ns.store(*cooldown_set_, kSeqCst);
}

void SlotTable::RaiseQuarantineRecord(std::int64_t end_ns) noexcept {
  quarantine_record_set_ = std::max(quarantine_record_set_, end_ns);
  std::int64_t cur = header_->quarantine_until_ns.load(kAcquire);
  while (cur < end_ns &&
         !header_->quarantine_until_ns.compare_exchange_weak(cur, end_ns, kSeqCst)) {
  }
}

std::vector<std::uint32_t> SlotTable::QuarantineUnheld(std::uint32_t n) noexcept {
  std::vector<std::uint32_t> out;
  std::uint32_t bound = header_->scan_bound.load(kAcquire);
  for (const std::uint64_t from : {kFree, kDisabled}) {
    for (std::uint32_t i = 0; i < slot_count_ && out.size() < n; ++i) {
      std::uint64_t expected = from;
      if (slots_[i].word.compare_exchange_strong(expected, kQuarantined, kSeqCst)) {
        if (from == kFree) ClearFreeBit(i);
        out.push_back(i);
        bound = std::max(bound, i + 1);
      }
    }
  }
  header_->scan_bound.store(bound, kSeqCst);
  return out;
}

std::vector<std::uint32_t> SlotTable::QuarantinedSlots() const {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    if (slots_[i].word.load(kAcquire) == kQuarantined) out.push_back(i);
  }
  return out;
}

SlotTable::AuditFindings SlotTable::Audit(const AuditPolicy& p) noexcept {
  AuditFindings f;
  if (!owners_seeded_) (void)SeedOwners();
  SegmentHeader& h = *header_;
  // An owner may hold or wait only if this broker handed its id out (or an
  // earlier broker did: seeded) and the broker knows it now.
  const auto known = [&](std::uint32_t owner) {
    return owner != 0 && owner <= owner_high_ && (!p.known_owner || p.known_owner(owner));
  };

  // 1. Header fields only the broker writes: put back what it set.
  if (h.next_owner.load(kAcquire) != owner_high_) {
    h.next_owner.store(owner_high_, kSeqCst);
    ++f.header_fields;
  }
  if (cooldown_set_ && h.release_cooldown_ns.load(kAcquire) != *cooldown_set_) {
    h.release_cooldown_ns.store(*cooldown_set_, kSeqCst);
    ++f.header_fields;
  }
  if (fence_set_ && (h.lease_deadline_ns.load(kAcquire) != fence_set_->second ||
                     h.floor.load(kAcquire) != fence_set_->first)) {
    // The deadline first: restoring it can only make fewer slots usable.
    h.lease_deadline_ns.store(fence_set_->second, kSeqCst);
    h.floor.store(fence_set_->first, kSeqCst);
    ++f.header_fields;
  }
  if (capacity_set_ && h.capacity.load(kAcquire) != *capacity_set_) {
    h.capacity.store(*capacity_set_, kSeqCst);
    ++f.header_fields;
  }
  if (h.quarantine_until_ns.load(kAcquire) < quarantine_record_set_) {
    h.quarantine_until_ns.store(quarantine_record_set_, kSeqCst);
    ++f.header_fields;
  }

  // Before any word goes to quarantine (or a stray one gets an end): the
  // record a restarted broker trusts must cover it.
  bool recorded = false;
  const auto record = [&] {
    if (!recorded && p.quarantine_end_ns > 0) RaiseQuarantineRecord(p.quarantine_end_ns);
    recorded = true;
  };

  // 2. One pass over the slot words. Only the broker moves words between
  // kDisabled, kFree and kQuarantined (invariant 1), so every CAS below
  // races only clients' own legal moves, which make it fail harmlessly.
  std::vector<std::uint32_t> forged;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    std::atomic<std::uint64_t>& cell = slots_[i].word;
    std::uint64_t w = cell.load(kAcquire);
    if (w == kDisabled || w == kFree) continue;
    if (w == kQuarantined) {
      if (!std::binary_search(p.quarantined.begin(), p.quarantined.end(), i)) {
        record();
        ++f.stray_quarantine;
        f.quarantined.push_back(i);  // the broker gives it a full quarantine
      }
    } else if (IsHeld(w)) {
      if (!known(OwnerOf(w)) &&
          std::find(forged.begin(), forged.end(), OwnerOf(w)) == forged.end()) {
        forged.push_back(OwnerOf(w));
      }
    } else if (IsCooling(w)) {
      // Past the horizon: a stamp no release of this target can have made
      // (one pinning the slot for up to kMaxReleaseCooldownNs).
      if (CoolingDeadline(w) > p.cooling_horizon_ns &&
          cell.compare_exchange_strong(
              w, CoolingWord(std::max<std::int64_t>(p.cooling_horizon_ns, 0),
                             (w & kRetireBit) != 0),
              kSeqCst)) {
        ++f.future_cooling;
      }
    } else {
      // No valid state: as if held by an unknown owner that may have a
      // session on the server.
      record();
      if (cell.compare_exchange_strong(w, kQuarantined, kSeqCst)) {
        ++f.invalid_words;
        f.quarantined.push_back(i);
      }
    }
  }
  if (!forged.empty() && p.quarantine) record();
  for (const std::uint32_t owner : forged) {
    std::uint32_t freed = 0;
    // The summary is repaired once, at step 8, not once per forged owner.
    const std::vector<std::uint32_t> q = ReclaimOwner(owner, p.quarantine, &freed, false);
    f.quarantined.insert(f.quarantined.end(), q.begin(), q.end());
    f.forged_owners += freed;
    if (f.forged_owner_ids.size() < 8) f.forged_owner_ids.push_back(owner);
  }

  // 3. Slots of the broker's quarantine must still be quarantined: one
  // written free would serve a new session while the server may still count
  // the old one.
  for (const std::uint32_t i : p.quarantined) {
    if (i >= slot_count_) continue;
    std::uint64_t w = slots_[i].word.load(kAcquire);
    if (w == kQuarantined) continue;
    ++f.quarantine_cleared;
    if (w == kFree) slots_[i].word.compare_exchange_strong(w, kQuarantined, kSeqCst);
  }

  // 4. Capacity. Legal moves keep free + held + cooling (none retiring) at or
  // below the capacity the broker set (quarantined slots may put the total
  // above it for a while, see QuarantineUnheld), and the total with
  // quarantined ones at or above it (up to slot_count).
  const std::uint32_t cap =
      std::min(capacity_set_ ? *capacity_set_ : h.capacity.load(kAcquire), slot_count_);
  std::uint32_t usable = 0;
  std::uint32_t total = 0;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t w = slots_[i].word.load(kAcquire);
    const bool retiring = (IsHeld(w) || IsCooling(w)) && (w & kRetireBit) != 0;
    if (w == kFree || ((IsHeld(w) || IsCooling(w)) && !retiring)) ++usable;
    if (w == kQuarantined || (w != kDisabled && !retiring)) ++total;
  }
  if (usable > cap) {
    f.excess_enabled = usable - cap;
    // Free ones first (nobody loses anything), then cooling ones (retired:
    // they leave at their deadline), then held ones (asked back).
    for (std::uint32_t i = slot_count_; i-- > 0 && usable > cap;) {
      std::uint64_t expected = kFree;
      if (slots_[i].word.compare_exchange_strong(expected, kDisabled, kSeqCst)) --usable;
    }
    for (std::uint32_t i = slot_count_; i-- > 0 && usable > cap;) {
      std::uint64_t w = slots_[i].word.load(kAcquire);
      while (IsCooling(w) && (w & kRetireBit) == 0) {
        if (slots_[i].word.compare_exchange_weak(w, w | kRetireBit, kSeqCst)) {
          --usable;
          break;
        }
      }
    }
    bool revoked = false;
    for (int pass = 0; pass < 2 && usable > cap; ++pass) {
      for (std::uint32_t i = slot_count_; i-- > 0 && usable > cap;) {
        std::uint64_t w = slots_[i].word.load(kAcquire);
        while (IsHeld(w) && (w & kRetireBit) == 0 && (pass == 1 || (w & kSystemBit) == 0)) {
          if (slots_[i].word.compare_exchange_weak(w, w | kRetireBit, kSeqCst)) {
            --usable;
            revoked = true;
            break;
          }
        }
      }
    }
    if (revoked) BumpRevocationGeneration();
  } else if (total < cap) {
    // Words written to kDisabled (over free or quarantined ones): capacity
    // the broker set would be lost for good. Enable it again.
    f.lost_capacity = cap - total;
    (void)SetCapacityUnlocked(cap);
  }

  // 5. scan_bound must cover every slot that is not disabled.
  std::uint32_t needed = 0;
  for (std::uint32_t i = slot_count_; i-- > 0;) {
    if (slots_[i].word.load(kAcquire) != kDisabled) {
      needed = i + 1;
      break;
    }
  }
  if (h.scan_bound.load(kAcquire) < needed) {
    h.scan_bound.store(needed, kSeqCst);
    ++f.header_fields;
  }

  // 6. Waiting entries: of an unknown owner, or with a word no grant may
  // write. Cancelled without the mutex (invariant 1c).
  for (std::uint32_t i = 0; i < waiter_capacity_; ++i) {
    WaitEntry& e = entries_[i];
    const std::uint32_t st = e.state.load(kAcquire);
    if (st != kWaitWaiting && st != kWaitGranting) continue;
    const std::uint64_t hw = e.held_word;
    const bool valid = IsHeld(hw) && (hw & (kRetireBit | kGrantBit)) == 0 && known(OwnerOf(hw));
    if (!valid && CancelEntry(e)) {
      ++f.forged_waiters;
      e.futex.store(1, kSeqCst);
      FutexWake(&e.futex, 1);
    }
  }

  // 7. The queue: impossible indices or a waiter count above the entries in
  // the queue (legal decrements can only lower it). Try-lock only.
  bool repaired = false;
  if (LockQueue(std::chrono::nanoseconds(0), &repaired)) {
    if (h.waiters.load(kAcquire) > h.queue_tail - h.queue_head) {
      RecountWaitersLocked();
      repaired = true;
    }
    if (repaired) ++f.queue_repairs;
    UnlockQueue();
  }
  // 8. The summary, after every word this audit moved (S4).
  f.summary = RepairSummary();
  if (!forged.empty() || f.excess_enabled + f.lost_capacity > 0 || f.summary.set > 0) {
    (void)Pump();
  }
  return f;
}

void SlotTable::BumpRevocationGeneration() noexcept {
  header_->revocation_generation.fetch_add(1, kSeqCst);
}

void SlotTable::SetLeaseFence(std::uint32_t floor, std::int64_t deadline_ns) noexcept {
  // No mutex: takers read each field after their CAS (invariant 4). The more
  // restrictive change goes first, so a taker between the two stores sees at
  // most the old usable set: a lower floor before a new deadline, a higher
  // floor after it.
  SegmentHeader& h = *header_;
  fence_set_ = {floor, deadline_ns};
  const std::uint32_t old_floor = h.floor.load(kAcquire);
  if (floor < old_floor) h.floor.store(floor, kSeqCst);
  h.lease_deadline_ns.store(deadline_ns, kSeqCst);
  if (floor > old_floor) h.floor.store(floor, kSeqCst);
  ArrangeFloorLow();
}

bool SlotTable::NoteLeaseLapse(std::int64_t now_ns) noexcept {
  SegmentHeader& h = *header_;
  const std::int64_t deadline = h.lease_deadline_ns.load(kAcquire);
  if (deadline == 0 || now_ns < deadline) return false;
  std::int64_t noted = h.lapse_noted_ns.load(kAcquire);
  if (noted == deadline || !h.lapse_noted_ns.compare_exchange_strong(noted, deadline, kSeqCst)) {
    return false;
  }
  BumpRevocationGeneration();
  return true;
}

std::uint64_t SlotTable::BumpBrokerGeneration(ProcessId pid) noexcept {
  header_->broker_pid.store(static_cast<std::uint32_t>(pid), kSeqCst);
  return header_->broker_generation.fetch_add(1, kSeqCst) + 1;
}

Counts SlotTable::Count() const noexcept {
  Counts c;
  std::int64_t now = 0;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t w = slots_[i].word.load(kAcquire);
    if (IsCooling(w)) {
      if (now == 0) now = MonotonicNs();
      const bool retiring = (w & kRetireBit) != 0;
      if (!CoolingExpired(w, now)) {
        ++c.cooling;
        if (retiring) ++c.cooling_retiring;
      } else if (!retiring) {
        ++c.free;  // usable: the next taker CASes the cooling word
      }
      if (!retiring) ++c.enabled;
    } else if (w == kFree) {
      ++c.free;
      ++c.enabled;
    } else if (w == kQuarantined) {
      ++c.quarantined;
      ++c.enabled;
    } else if (IsHeld(w)) {
      if ((w & kSystemBit) != 0) {
        ++c.held_system;
      } else {
        ++c.held_action;
      }
      if ((w & kRetireBit) != 0) {
        ++c.retiring;
      } else {
        ++c.enabled;
      }
    }
  }
  c.waiters = header_->waiters.load(kAcquire);
  c.capacity = header_->capacity.load(kAcquire);
  return c;
}

std::map<std::uint32_t, OwnerHoldings> SlotTable::HoldingsByOwner() const {
  std::map<std::uint32_t, OwnerHoldings> out;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    const std::uint64_t w = slots_[i].word.load(kAcquire);
    if (!IsHeld(w)) continue;
    OwnerHoldings& o = out[OwnerOf(w)];
    if ((w & kSystemBit) != 0) {
      ++o.system;
    } else {
      ++o.action;
    }
  }
  return out;
}

std::uint64_t SlotTable::queue_grants() const noexcept { return header_->grants; }
std::uint64_t SlotTable::queue_repairs() const noexcept { return header_->repairs; }

}  // namespace dsb::shm
