#include "shm/slot_table.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstring>
#include <random>

#include "common/check.h"
#include "shm/futex.h"

namespace dsb::shm {
namespace bip = boost::interprocess;

namespace {

constexpr auto kSeqCst = std::memory_order_seq_cst;
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;

// The shortest timed wait for a cooling slot: bounds how often a waiter can
// wake when a deadline it sees is already past but unusable (a word another
// process keeps rewriting), so hostile words cannot make it spin.
constexpr std::int64_t kMinCoolingWaitNs = 50'000;


std::uint64_t Fnv1a(std::uint64_t h, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::uint64_t LayoutChecksum(const SegmentHeader& h) {
  std::uint64_t c = 0xcbf29ce484222325ULL;
  c = Fnv1a(c, &h.magic, sizeof h.magic);
  c = Fnv1a(c, &h.layout_version, sizeof h.layout_version);
  c = Fnv1a(c, &h.header_size, sizeof h.header_size);
  c = Fnv1a(c, &h.total_size, sizeof h.total_size);
  c = Fnv1a(c, &h.slot_count, sizeof h.slot_count);
  c = Fnv1a(c, &h.waiter_capacity, sizeof h.waiter_capacity);
  c = Fnv1a(c, &h.instance_id, sizeof h.instance_id);
  c = Fnv1a(c, h.target, sizeof h.target);
  return c;
}

std::string Hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string ShmPath(const std::string& name) { return "/dev/shm/" + name; }

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 200) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  }
  return true;
}

}  // namespace

std::string SegmentName(const std::string& prefix, const std::string& target) {
  return "dsb-" + prefix + "-" + target;
}

SlotTable::~SlotTable() = default;

std::string SlotTable::target() const {
  return std::string(header_->target, strnlen(header_->target, kTargetNameCapacity));
}

bool SlotTable::Exists(const std::string& name) {
  struct stat st {};
  return ::stat(ShmPath(name).c_str(), &st) == 0;
}

Status SlotTable::Remove(const std::string& name) {
  if (!ValidName(name)) {
    return {Errc::kInvalidArgument, "invalid segment name '" + name + "'"};
  }
  bip::shared_memory_object::remove(name.c_str());
  return Status::Ok();
}

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

Result<std::unique_ptr<SlotTable>> SlotTable::Attach(const std::string& name) {
  return Map(name, false, nullptr);
}

Result<std::unique_ptr<SlotTable>> SlotTable::Map(const std::string& name, bool create,
                                                  const CreateOptions* options) {
  if (!ValidName(name)) {
    return Status{Errc::kInvalidArgument,
                  "invalid segment name '" + name + "' (letters, digits, '-', '_', '.')"};
  }
  auto table = std::unique_ptr<SlotTable>(new SlotTable());
  table->name_ = name;
  try {
    bip::shared_memory_object shm;
    std::size_t size = 0;
    if (create) {
      bip::permissions perms(0660);
      shm = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write, perms);
      size = SegmentBytes(options->slot_count, options->waiter_capacity);
      shm.truncate(static_cast<bip::offset_t>(size));
      const int fd = shm.get_mapping_handle().handle;
      ::fchmod(fd, 0660);  // umask may have narrowed the create mode
      if (options->group && ::fchown(fd, static_cast<uid_t>(-1), *options->group) != 0) {
        const int err = errno;
        bip::shared_memory_object::remove(name.c_str());
        return Status{Errc::kSegmentUnavailable, "segment " + name + ": cannot give it to group " +
                                                     std::to_string(*options->group) + ": " +
                                                     std::strerror(err)};
      }
    } else {
      shm = bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
      bip::offset_t s = 0;
      if (!shm.get_size(s) || s < 0) {
        return Status{Errc::kSegmentInvalid, "segment " + name + ": cannot read its size"};
      }
      size = static_cast<std::size_t>(s);
      if (size < HeaderBytes()) {
        return Status{Errc::kSegmentInvalid,
                      "segment " + name + " is " + std::to_string(size) +
                          " bytes, smaller than a dsb slot-table header (" +
                          std::to_string(HeaderBytes()) + "): not a dsb segment"};
      }
    }
    table->region_ = std::make_unique<bip::mapped_region>(shm, bip::read_write, 0, size);
    table->size_ = size;
  } catch (const bip::interprocess_exception& e) {
    const bool exists = e.get_error_code() == bip::already_exists_error;
    const bool missing = e.get_error_code() == bip::not_found_error;
    std::string why = e.what();
    if (exists) why = "it already exists (another broker with the same shm_prefix?)";
    if (missing) why = "it does not exist (is the broker running?)";
    return Status{Errc::kSegmentUnavailable,
                  "segment " + name + " (" + ShmPath(name) + "): cannot " +
                      (create ? "create" : "open") + ": " + why};
  }

  table->base_ = table->region_->get_address();
  auto* base = static_cast<char*>(table->base_);
  table->header_ = reinterpret_cast<SegmentHeader*>(base);
  SegmentHeader& h = *table->header_;

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
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h.queue_mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    h.queue_head = h.queue_tail = 0;
    h.layout_checksum = LayoutChecksum(h);
  } else {
    if (h.magic != kMagic) {
      return Status{Errc::kSegmentInvalid, "segment " + name + ": wrong magic " + Hex(h.magic) +
                                               " (expected " + Hex(kMagic) +
                                               "): not a dsb slot table, or corrupt"};
    }
    if (h.layout_version != kLayoutVersion) {
      return Status{Errc::kSegmentInvalid,
                    "segment " + name + ": layout version " + std::to_string(h.layout_version) +
                        ", this build reads version " + std::to_string(kLayoutVersion) +
                        "; stop every client and the broker, then remove " + ShmPath(name)};
    }
    if (h.header_size != sizeof(SegmentHeader) || h.slot_count == 0 ||
        h.slot_count > kMaxSlots || h.waiter_capacity == 0 || h.waiter_capacity > 65536 ||
        h.total_size != table->size_ ||
        SegmentBytes(h.slot_count, h.waiter_capacity) != table->size_) {
      return Status{Errc::kSegmentInvalid,
                    "segment " + name + ": size fields disagree (file " +
                        std::to_string(table->size_) + " bytes, header says " +
                        std::to_string(h.total_size) + ", slots " +
                        std::to_string(h.slot_count) + ", waiters " +
                        std::to_string(h.waiter_capacity) + ")"};
    }
    if (h.layout_checksum != LayoutChecksum(h)) {
      return Status{Errc::kSegmentInvalid, "segment " + name + ": header checksum mismatch (" +
                                               Hex(h.layout_checksum) + " stored, " +
                                               Hex(LayoutChecksum(h)) + " computed): corrupt"};
    }
    if (strnlen(h.target, kTargetNameCapacity) == kTargetNameCapacity) {
      return Status{Errc::kSegmentInvalid, "segment " + name + ": target name not terminated"};
    }
  }
  table->slot_count_ = h.slot_count;
  table->waiter_capacity_ = h.waiter_capacity;
  table->entries_ = reinterpret_cast<WaitEntry*>(base + HeaderBytes());
  table->slots_ = reinterpret_cast<SlotCell*>(base + HeaderBytes() +
                                              std::size_t{h.waiter_capacity} * sizeof(WaitEntry));
  if (create) {
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

std::uint32_t SlotTable::TakeCooled(std::uint64_t held_word, std::uint32_t bound) noexcept {
  const std::int64_t now = MonotonicNs();
  std::uint32_t idx = detail::tl_hint < bound ? detail::tl_hint : 0;
  for (std::uint32_t n = 0; n < bound; ++n) {
    std::atomic<std::uint64_t>& w = slots_[idx].word;
    std::uint64_t v = w.load(kRelaxed);
    if (IsCooling(v) && CoolingExpired(v, now)) {
      if ((v & kRetireBit) != 0) {
        w.compare_exchange_strong(v, kDisabled, kSeqCst);  // leaves the table
      } else if (w.compare_exchange_strong(v, held_word, kSeqCst)) {
        detail::tl_hint = idx;
        return idx;
      }
    } else if (v == kFree) {
      // Freed since the first pass.
      if (w.compare_exchange_strong(v, held_word, kSeqCst)) {
        detail::tl_hint = idx;
        return idx;
      }
    }
    if (++idx == bound) idx = 0;
  }
  return kNoSlot;
}

std::int64_t SlotTable::EarliestCoolingDeadline(std::int64_t now_ns,
                                                bool* expired) const noexcept {
  const std::uint32_t bound = std::min(header_->scan_bound.load(kAcquire), slot_count_);
  std::int64_t earliest = 0;
  *expired = false;
  for (std::uint32_t i = 0; i < bound; ++i) {
    const std::uint64_t v = slots_[i].word.load(kAcquire);
    if (!IsCooling(v) || (v & kRetireBit) != 0) continue;
    if (CoolingExpired(v, now_ns)) {
      *expired = true;
    } else if (earliest == 0 || CoolingDeadline(v) < earliest) {
      earliest = CoolingDeadline(v);
    }
  }
  return earliest;
}

Result<std::uint32_t> SlotTable::Acquire(std::uint64_t held_word, std::chrono::nanoseconds timeout,
                                         WaitInterrupt* interrupt) noexcept {
  if (auto idx = TryAcquire(held_word)) return *idx;
  if (timeout.count() == 0) return Status{Errc::kCapacityExhausted, ""};
  const auto deadline = timeout.count() < 0
                            ? std::chrono::steady_clock::time_point::max()
                            : std::chrono::steady_clock::now() + timeout;
  if (!LockQueue()) return Status{Errc::kInternal, "segment " + name_ + ": queue unrecoverable"};
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
  for (;;) {
    e.futex.store(0, kSeqCst);
    // seq_cst: pairs with the granter's state store then futex store, so
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
    } else if (now >= deadline) {
      failure = Status{Errc::kTimeout, ""};
    }
    if (!failure.ok()) {
      if (!LockQueue()) return Status{Errc::kInternal, "segment " + name_ + ": queue unrecoverable"};
      const std::uint32_t locked_st = e.state.load(kAcquire);
      const bool ours = e.ticket == ticket;
      if (ours && locked_st == kWaitGranted) {
        UnlockQueue();
        failure = Status::Ok();
        break;  // granted just before we gave up: take it
      }
      if (ours && locked_st == kWaitWaiting) {
        e.state.store(kWaitCancelled, kRelease);
        // Only entries in [head, tail) are counted (LockQueue may have
        // repaired torn indices and left ours outside).
        if (ticket >= h.queue_head && ticket < h.queue_tail &&
            h.waiters.load(kAcquire) != 0) {
          h.waiters.fetch_sub(1, kSeqCst);
        }
      }
      PumpLocked();
      UnlockQueue();
      if (interrupt != nullptr && armed) interrupt->Disarm(&e.futex);
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
      Pump();
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
    FutexWait(&e.futex, 0, left);
  }
  if (interrupt != nullptr && armed) interrupt->Disarm(&e.futex);
  const std::uint32_t idx = e.slot;
  PickUpGrant(idx, held_word);
  e.state.store(kWaitEmpty, kRelease);
  detail::tl_hint = idx;
  return idx;
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

bool SlotTable::LockQueue() noexcept {
  const int rc = pthread_mutex_lock(&header_->queue_mutex);
  if (rc == EOWNERDEAD) {
    // A process died holding the queue: make the queue consistent again.
    RepairQueueLocked();
    pthread_mutex_consistent(&header_->queue_mutex);
    ++header_->repairs;
    return true;
  }
  if (rc != 0) return false;
  const SegmentHeader& h = *header_;
  if (h.queue_tail < h.queue_head || h.queue_tail - h.queue_head > waiter_capacity_) {
    RepairQueueLocked();  // torn or hostile indices: never loop over them
  }
  return true;
}

void SlotTable::UnlockQueue() noexcept { pthread_mutex_unlock(&header_->queue_mutex); }

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
      st = handed ? kWaitGranted : queued ? kWaitWaiting : kWaitCancelled;
      e.state.store(st, kSeqCst);
    } else if (st == kWaitWaiting && !queued) {
      // Outside [head, tail) nobody would ever serve it (tail is bumped before
      // an entry becomes kWaitWaiting): let its waiter go.
      st = kWaitCancelled;
      e.state.store(st, kSeqCst);
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

void SlotTable::PumpLocked() noexcept {
  SegmentHeader& h = *header_;
  std::int64_t now = 0;
  // Each round serves or passes the head entry, so waiter_capacity rounds
  // cover the queue (LockQueue keeps tail - head <= waiter_capacity).
  for (std::uint32_t round = 0; round < waiter_capacity_ && h.queue_head < h.queue_tail;
       ++round) {
    WaitEntry& e = entries_[h.queue_head % waiter_capacity_];
    if (e.state.load(kAcquire) != kWaitWaiting) {
      ++h.queue_head;
      continue;
    }
    const std::uint32_t bound = std::min(h.scan_bound.load(kAcquire), slot_count_);
    bool granted = false;
    for (std::uint32_t i = 0; i < bound; ++i) {
      std::atomic<std::uint64_t>& w = slots_[i].word;
      std::uint64_t expected = w.load(kSeqCst);
      if (IsCooling(expected)) {
        if (now == 0) now = MonotonicNs();  // once per pump, only if something cools
        if (!CoolingExpired(expected, now)) continue;
        if ((expected & kRetireBit) != 0) {
          w.compare_exchange_strong(expected, kDisabled, kSeqCst);  // leaves the table
          continue;
        }
      } else if (expected != kFree) {
        continue;
      }
      e.slot = i;
      e.state.store(kWaitGranting, kSeqCst);
      // held|kGrantBit, not the plain word: see RepairQueueLocked.
      if (w.compare_exchange_strong(expected, e.held_word | kGrantBit, kSeqCst)) {
        e.state.store(kWaitGranted, kSeqCst);
        h.waiters.fetch_sub(1, kSeqCst);
        ++h.grants;
        ++h.queue_head;
        e.futex.store(1, kSeqCst);
        FutexWake(&e.futex, 1);
        granted = true;
        break;
      }
      e.state.store(kWaitWaiting, kSeqCst);  // a fast-path taker won this one
    }
    if (!granted) return;
  }
}

void SlotTable::Pump() noexcept {
  if (!LockQueue()) return;
  PumpLocked();
  UnlockQueue();
}

void SlotTable::CancelWaitersLocked(std::uint32_t owner) noexcept {
  for (std::uint32_t i = 0; i < waiter_capacity_; ++i) {
    WaitEntry& e = entries_[i];
    const std::uint32_t st = e.state.load(kAcquire);
    if (st == kWaitEmpty || st == kWaitCancelled || OwnerOf(e.held_word) != owner) continue;
    if (st == kWaitWaiting || st == kWaitGranting) {
      e.state.store(kWaitCancelled, kSeqCst);
      e.futex.store(1, kSeqCst);  // a live thread of the owner stops waiting
      FutexWake(&e.futex, 1);
    } else if (st == kWaitGranted) {
      e.state.store(kWaitEmpty, kRelease);  // its slot is reclaimed by the caller
    }
  }
  // Recount instead of decrementing: an entry may be kWaitWaiting without
  // having been counted (enqueuer killed before its increment).
  RecountWaitersLocked();
}

// ---- Broker side -----------------------------------------------------------

std::uint32_t SlotTable::AllocateOwner() noexcept {
  std::uint32_t id = header_->next_owner.fetch_add(1, kSeqCst) + 1;
  while (id == 0) id = header_->next_owner.fetch_add(1, kSeqCst) + 1;
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

// Capacity changes (SetCapacity, EndQuarantine, the client-side lease fence)
// run under the queue mutex: each counts enabled slots and then acts on the
// count, so two at once would over-shrink or over-grow. The fast path does
// not take the mutex; it only moves kFree <-> held, which leaves the count of
// enabled slots unchanged.
bool SlotTable::SetCapacity(std::uint32_t n) noexcept {
  if (!LockQueue()) return SetCapacityLocked(n);  // unrecoverable: best effort
  const bool revoked = SetCapacityLocked(n);
  PumpLocked();
  UnlockQueue();
  return revoked;
}

bool SlotTable::SetCapacityRetiringFirst(std::uint32_t n, std::uint32_t index,
                                         std::uint64_t held_word) noexcept {
  const bool locked = LockQueue();
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
  revoked = SetCapacityLocked(n) || revoked;
  if (locked) {
    PumpLocked();
    UnlockQueue();
  }
  return revoked;
}

bool SlotTable::SetCapacityLocked(std::uint32_t n) noexcept {
  n = std::min(n, slot_count_);
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
      }
    }
    header_->scan_bound.store(bound, kSeqCst);
  } else if (enabled > n) {
    for (std::uint32_t i = slot_count_; i-- > 0 && enabled > n;) {
      std::uint64_t expected = kFree;
      if (slots_[i].word.compare_exchange_strong(expected, kDisabled, kSeqCst)) --enabled;
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
  return revoked;
}

std::vector<std::uint32_t> SlotTable::Reclaim(std::uint32_t owner, bool quarantine,
                                              std::uint32_t* freed) noexcept {
  std::vector<std::uint32_t> quarantined;
  std::uint32_t count = 0;
  const bool locked = LockQueue();
  if (locked) CancelWaitersLocked(owner);
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
  if (freed != nullptr) *freed = count;
  if (locked) {
    PumpLocked();
    UnlockQueue();
  }
  return quarantined;
}

void SlotTable::EndQuarantine(std::uint32_t index) noexcept {
  if (index >= slot_count_) return;
  const bool locked = LockQueue();
  const bool over = CountEnabled() > header_->capacity.load(kAcquire);
  std::uint64_t expected = kQuarantined;
  const bool freed =
      slots_[index].word.compare_exchange_strong(expected, over ? kDisabled : kFree, kSeqCst) &&
      !over;
  if (locked) {
    if (freed) PumpLocked();
    UnlockQueue();
  }
}

void SlotTable::SetReleaseCooldown(std::chrono::nanoseconds cooldown) noexcept {
  header_->release_cooldown_ns.store(
      std::clamp<std::int64_t>(cooldown.count(), 0, kMaxReleaseCooldownNs), kSeqCst);
}

void SlotTable::RaiseQuarantineRecord(std::int64_t end_ns) noexcept {
  std::int64_t cur = header_->quarantine_until_ns.load(kAcquire);
  while (cur < end_ns &&
         !header_->quarantine_until_ns.compare_exchange_weak(cur, end_ns, kSeqCst)) {
  }
}

std::vector<std::uint32_t> SlotTable::QuarantineUnheld(std::uint32_t n) noexcept {
  std::vector<std::uint32_t> out;
  const bool locked = LockQueue();
  std::uint32_t bound = header_->scan_bound.load(kAcquire);
  for (const std::uint64_t from : {kFree, kDisabled}) {
    for (std::uint32_t i = 0; i < slot_count_ && out.size() < n; ++i) {
      std::uint64_t expected = from;
      if (slots_[i].word.compare_exchange_strong(expected, kQuarantined, kSeqCst)) {
        out.push_back(i);
        bound = std::max(bound, i + 1);
      }
    }
  }
  header_->scan_bound.store(bound, kSeqCst);
  if (locked) UnlockQueue();
  return out;
}

std::vector<std::uint32_t> SlotTable::QuarantinedSlots() const {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    if (slots_[i].word.load(kAcquire) == kQuarantined) out.push_back(i);
  }
  return out;
}

void SlotTable::BumpRevocationGeneration() noexcept {
  header_->revocation_generation.fetch_add(1, kSeqCst);
}

void SlotTable::SetLeaseFence(std::uint32_t floor, std::int64_t deadline_ns) noexcept {
  // Under the queue mutex so a fence sees the floor and deadline as a pair.
  const bool locked = LockQueue();
  header_->floor.store(floor, kSeqCst);
  header_->lease_deadline_ns.store(deadline_ns, kSeqCst);
  if (locked) UnlockQueue();
}

bool SlotTable::EnforceLeaseDeadline(std::int64_t now_ns) noexcept {
  SegmentHeader& h = *header_;
  const std::int64_t seen = h.lease_deadline_ns.load(kAcquire);
  if (seen == 0 || now_ns <= seen) return false;  // common case: no mutex
  if (!LockQueue()) return false;
  bool fenced = false;
  const std::int64_t deadline = h.lease_deadline_ns.load(kAcquire);
  if (deadline != 0 && now_ns > deadline) {
    const std::uint32_t floor = h.floor.load(kAcquire);
    // Shrink first, clear the deadline after: a fencer killed in between
    // leaves the deadline set, so the next fence finishes the shrink.
    if (h.capacity.load(kAcquire) > floor || CountEnabled() > floor) {
      SetCapacityLocked(floor);
      fenced = true;
    }
    // From the value read: never wipe a deadline the broker wrote meanwhile.
    std::int64_t expected = deadline;
    h.lease_deadline_ns.compare_exchange_strong(expected, 0, kSeqCst);
  }
  UnlockQueue();
  return fenced;
}

std::uint64_t SlotTable::BumpBrokerGeneration(pid_t pid) noexcept {
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
