// Regression tests for the review findings on the slot table's crash repair,
// queue bookkeeping and capacity changes (#5, #7, #9, #11, #12, #13).
//
// Most build the exact shared state a process killed at a given instruction
// leaves behind, by writing the segment through a second raw mapping, and
// make the queue mutex's owner die (a forked child locks it and exits) so the
// next locker runs the repair.
//
// Windows (issue 12): the mutex is a named kernel mutex, and its holder
// "dies" as a thread that takes it and ends without releasing it: the kernel
// abandons it and the next locker gets WAIT_ABANDONED, which takes the same
// repair path. The two tests that fork and SIGSTOP a child are POSIX-only.
#include <gtest/gtest.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <vector>

#include "shm/segment_memory.h"
#include "shm/slot_table.h"
#include "tests/shm/segment_fixture.h"
#include "tests/support/wait.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;

// Sleeps until MonotonicNs() reads `deadline` (the clock is the event). On
// Windows winpthreads' clock_nanosleep may return up to a millisecond early
// (it sleeps in whole milliseconds): sleep again until the deadline has passed.
void SleepPast(std::int64_t deadline) {
  while (MonotonicNs() < deadline) dsb::testing::SleepUntilMonotonicNs(deadline);
}

// A second, raw view of a segment: what a (possibly dying) process sees.
struct RawView {
  SegmentHeader* h = nullptr;
  WaitEntry* entries = nullptr;
  SlotCell* slots = nullptr;
  void* base = nullptr;
  std::size_t size = 0;
  std::unique_ptr<SegmentMemory> memory;

  RawView(const std::string& name, std::uint32_t slot_count, std::uint32_t wcap) {
    auto m = SegmentMemory::Open(name, std::nullopt);
    EXPECT_TRUE(m.ok()) << m.status().message();
    if (!m.ok()) return;
    memory = std::move(m).value();
    size = SegmentBytes(slot_count, wcap);
    EXPECT_EQ(memory->size(), size);
    base = memory->address();
    auto* p = static_cast<char*>(base);
    h = reinterpret_cast<SegmentHeader*>(p);
    entries = reinterpret_cast<WaitEntry*>(p + HeaderBytes());
    slots = reinterpret_cast<SlotCell*>(p + HeaderBytes() + std::size_t{wcap} * sizeof(WaitEntry));
    auto* summary = reinterpret_cast<std::atomic<std::uint64_t>*>(slots + slot_count);
    free_top = summary;
    free_leaf = summary + SummaryTopBytes(slot_count) / sizeof(std::uint64_t);
  }
  std::atomic<std::uint64_t>* free_top = nullptr;
  std::atomic<std::uint64_t>* free_leaf = nullptr;

  // Queues an entry the way Acquire does, then leaves `waiters` as given.
  WaitEntry& Queue(std::uint64_t word, std::uint32_t state, std::uint32_t wcap) {
    WaitEntry& e = entries[h->queue_tail % wcap];
    e.held_word = word;
    e.ticket = h->queue_tail;
    e.slot = 0;
    e.futex.store(0);
    ++h->queue_tail;
    e.state.store(state);
    return e;
  }

  // A process that locks the queue mutex and dies: the next locker gets
  // EOWNERDEAD and repairs.
  void KillMutexHolder() {
#ifdef _WIN32
    // A thread that ends holding a mutex abandons it (as a killed process
    // does).
    char id[24];
    std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(h->instance_id));
    const std::string name = std::string("Local\\dsb-") + id + "-q";
    bool took = false;
    std::thread([&] {
      HANDLE m = ::OpenMutexA(SYNCHRONIZE | MUTEX_MODIFY_STATE, FALSE, name.c_str());
      if (m == nullptr) return;
      took = ::WaitForSingleObject(m, INFINITE) == WAIT_OBJECT_0;
      ::CloseHandle(m);
    }).join();
    ASSERT_TRUE(took) << name;
#else
    const pid_t child = ::fork();
    if (child == 0) {
      pthread_mutex_lock(&h->queue_mutex);
      _exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
#endif
  }
};

class QueueRepairTest : public ::testing::Test {
 protected:
  std::unique_ptr<SlotTable> Make(std::uint32_t slots, std::uint32_t capacity,
                                  std::uint32_t wcap = 8) {
    name_ = SegmentTestName("dsb-repair");
    wcap_ = wcap;
    slots_ = slots;
    CreateOptions o;
    o.name = name_;
    o.target = "t";
    o.slot_count = slots;
    o.capacity = capacity;
    o.waiter_capacity = wcap;
    auto t = SlotTable::Create(o);
    EXPECT_TRUE(t.ok()) << t.status().message();
    raw_ = std::make_unique<RawView>(name_, slots, wcap);
    return t.ok() ? std::move(t).value() : nullptr;
  }
  void TearDown() override {
    raw_.reset();
    if (!name_.empty()) (void)SlotTable::Remove(name_);
  }
  std::string name_;
  std::uint32_t wcap_ = 0;
  std::uint32_t slots_ = 0;
  std::unique_ptr<RawView> raw_;
};

// ---- #7: one slot, two holders ---------------------------------------------

// The granter died after a failed CAS (a sibling thread of the same owner took
// slot 0 on the fast path, writing the plain held word) and before putting
// the entry back to kWaitWaiting. The repair must not call that a grant.
TEST_F(QueueRepairTest, RepairDoesNotGrantASlotASiblingTookOnTheFastPath) {
  auto t = Make(1, 1);
  const std::uint32_t owner = t->AllocateOwner();
  const std::uint64_t w = HeldWord(owner, false);
  ASSERT_EQ(t->TryAcquireIndex(w), 0u);  // the sibling thread
  WaitEntry& e = raw_->Queue(w, kWaitGranting, wcap_);
  e.slot = 0;
  raw_->h->waiters.store(1);
  raw_->KillMutexHolder();
  t->Pump();  // locks: EOWNERDEAD -> repair
  EXPECT_EQ(t->queue_repairs(), 1u);
  EXPECT_EQ(e.state.load(), kWaitWaiting) << "one slot would have two holders";
  EXPECT_EQ(t->Count().waiters, 1u);
  EXPECT_EQ(raw_->slots[0].word.load(), w);
}

// The granter died after a successful CAS: the slot carries the grant word
// (here also retired by the broker meanwhile). The repair completes the grant
// and wakes the waiter.
TEST_F(QueueRepairTest, RepairCompletesAGrantThatWentThroughEvenIfRetired) {
  auto t = Make(1, 1);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  WaitEntry& e = raw_->Queue(w, kWaitGranting, wcap_);
  e.slot = 0;
  raw_->h->waiters.store(1);
  raw_->slots[0].word.store(w | kGrantBit | kRetireBit);
  raw_->KillMutexHolder();
  t->Pump();
  EXPECT_EQ(e.state.load(), kWaitGranted);
  EXPECT_EQ(e.futex.load(), 1u);
  EXPECT_EQ(t->Count().waiters, 0u);
}

// Every reader treats a grant word as held by its owner.
TEST_F(QueueRepairTest, AGrantWordIsHeldForEveryPurpose) {
  auto t = Make(2, 2);
  const std::uint32_t owner = t->AllocateOwner();
  const std::uint64_t w = HeldWord(owner, false);
  raw_->slots[0].word.store(w | kGrantBit);
  raw_->slots[1].word.store(w | kGrantBit);
  EXPECT_TRUE(t->StillHeld(0, w));
  Counts c = t->Count();
  EXPECT_EQ(c.held_action, 2u);
  EXPECT_EQ(c.enabled, 2u);
  EXPECT_EQ(t->HoldingsByOwner()[owner].action, 2u);
  // Shrinking retires it; the retire bit keeps the grant bit.
  EXPECT_TRUE(t->SetCapacity(1));
  const std::uint64_t retired = raw_->slots[1].word.load();
  EXPECT_EQ(retired, w | kGrantBit | kRetireBit);
  EXPECT_FALSE(t->StillHeld(1, w));
  t->Release(1, w);
  EXPECT_EQ(raw_->slots[1].word.load(), kDisabled);
  t->Release(0, w);
  EXPECT_EQ(raw_->slots[0].word.load(), kFree);
  raw_->slots[0].word.store(w | kGrantBit);
  EXPECT_EQ(t->Reclaim(owner, true).size(), 1u);
  EXPECT_EQ(raw_->slots[0].word.load(), kQuarantined);
}

// A real waiter is granted while it cannot run (SIGSTOP), so the slot keeps
// the grant word; the broker retires it; once the waiter runs it clears the
// grant bit and keeps the retire bit.
#ifndef _WIN32
TEST_F(QueueRepairTest, WaiterClearsTheGrantBitAndKeepsTheRetireBit) {
  auto t = Make(1, 1);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  ASSERT_EQ(t->TryAcquireIndex(holder), 0u);
  const pid_t child = ::fork();
  if (child == 0) {
    auto a = SlotTable::Attach(name_);
    if (!a.ok()) _exit(10);
    auto r = (*a)->Acquire(w, 30s, nullptr);
    if (!r.ok()) _exit(11);
    // Retired while granted: word must be exactly w|kRetireBit now.
    if (raw_->slots[*r].word.load() != (w | kRetireBit)) _exit(12);
    if ((*a)->StillHeld(*r, w)) _exit(13);
    (*a)->Release(*r, w);
    _exit(0);
  }
  while (t->Count().waiters != 1) std::this_thread::yield();
  // Stop the child outside the queue mutex (it may still be unlocking).
  for (;;) {
    ASSERT_EQ(::kill(child, SIGSTOP), 0);
    int st = 0;
    ASSERT_EQ(::waitpid(child, &st, WUNTRACED), child);
    if (pthread_mutex_trylock(&raw_->h->queue_mutex) == 0) {
      pthread_mutex_unlock(&raw_->h->queue_mutex);
      break;
    }
    ::kill(child, SIGCONT);
    std::this_thread::yield();
  }
  t->Release(0, holder);  // grants slot 0 to the stopped child
  EXPECT_EQ(raw_->slots[0].word.load(), w | kGrantBit);
  EXPECT_TRUE(t->StillHeld(0, w));
  EXPECT_TRUE(t->SetCapacity(0));
  EXPECT_EQ(raw_->slots[0].word.load(), w | kGrantBit | kRetireBit);
  ::kill(child, SIGCONT);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(raw_->slots[0].word.load(), kDisabled);
}
#endif

// ---- #11: enqueuer killed mid-enqueue --------------------------------------

// The reviewer's state (old enqueue order): an entry of a dead owner is
// kWaitWaiting at the tail place but neither queue_tail nor waiters counted
// it. Reclaiming that owner must not drive `waiters` below zero.
TEST_F(QueueRepairTest, ReclaimOfAnUncountedWaiterKeepsTheCountAndTheFastPath) {
  auto t = Make(4, 4);
  const std::uint32_t dead = t->AllocateOwner();
  const std::uint64_t live = HeldWord(t->AllocateOwner(), false);
  WaitEntry& e = raw_->entries[raw_->h->queue_tail % wcap_];
  e.held_word = HeldWord(dead, false);
  e.ticket = raw_->h->queue_tail;
  e.state.store(kWaitWaiting);
  raw_->KillMutexHolder();
  std::uint32_t held[4];
  for (auto& i : held) i = t->TryAcquireIndex(live);
  EXPECT_EQ(t->Acquire(live, 5ms, nullptr).status().code(), Errc::kTimeout);
  t->Reclaim(dead, false);
  EXPECT_EQ(t->Count().waiters, 0u);
  t->Release(held[0], live);
  EXPECT_EQ(t->Count().free, 1u);
  EXPECT_NE(t->TryAcquireIndex(live), SlotTable::kNoSlot);
}

// The current order: tail bumped and the entry kWaitWaiting, killed before
// waiters++. The repair recounts it, and reclaiming the owner drops it.
TEST_F(QueueRepairTest, EnqueuerKilledBeforeItsIncrementIsRecounted) {
  auto t = Make(2, 1);
  const std::uint32_t dead = t->AllocateOwner();
  const std::uint64_t live = HeldWord(t->AllocateOwner(), false);
  const std::uint32_t slot = t->TryAcquireIndex(live);
  raw_->Queue(HeldWord(dead, false), kWaitWaiting, wcap_);
  raw_->KillMutexHolder();
  t->Pump();
  EXPECT_EQ(t->Count().waiters, 1u);
  t->Reclaim(dead, false);
  EXPECT_EQ(t->Count().waiters, 0u);
  t->Release(slot, live);
  EXPECT_EQ(t->TryAcquireIndex(live), slot);
}

// ---- #12: granter killed before its futex wake -----------------------------

#ifndef _WIN32
namespace {
char TaskState(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto p = s.rfind(')');
  return p != std::string::npos && p + 2 < s.size() ? s[p + 2] : '?';
}
}  // namespace

TEST_F(QueueRepairTest, RepairWakesAWaiterWhoseGranterDiedBeforeTheWake) {
  auto t = Make(1, 1);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  ASSERT_EQ(t->TryAcquireIndex(holder), 0u);
  std::atomic<pid_t> tid{0};
  Result<std::uint32_t> got = Status{Errc::kInternal, "not run"};
  std::chrono::steady_clock::duration took{};
  std::thread waiter([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    const auto start = std::chrono::steady_clock::now();
    got = t->Acquire(w, 60s, nullptr);
    took = std::chrono::steady_clock::now() - start;
  });
  while (t->Count().waiters != 1 || tid.load() == 0) std::this_thread::yield();
  while (TaskState(tid.load()) != 'S') std::this_thread::yield();  // asleep on its futex
  // Another process grants slot 0 to the waiter and dies before the wake.
  const pid_t child = ::fork();
  if (child == 0) {
    SegmentHeader* h = raw_->h;
    pthread_mutex_lock(&h->queue_mutex);
    WaitEntry& e = raw_->entries[h->queue_head % wcap_];
    raw_->slots[0].word.store(e.held_word | kGrantBit);  // holder's release + grant
    e.slot = 0;
    e.state.store(kWaitGranted);
    h->waiters.fetch_sub(1);
    ++h->queue_head;
    _exit(0);
  }
  ::waitpid(child, nullptr, 0);
  t->Pump();  // the next locker repairs and must wake the waiter
  waiter.join();
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, 0u);
  EXPECT_LT(took, 30s) << "the waiter slept until its timeout";
  EXPECT_EQ(raw_->slots[0].word.load(), w);  // grant bit cleared
}
#endif

// ---- #13: corrupt indices --------------------------------------------------

TEST_F(QueueRepairTest, HostileQueueIndicesAreRepairedNotLoopedOver) {
  auto t = Make(2, 1);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  const std::uint32_t slot = t->TryAcquireIndex(w);
  raw_->h->queue_head = 5;
  raw_->h->queue_tail = 1ULL << 62;
  t->Pump();
  EXPECT_LE(raw_->h->queue_tail - raw_->h->queue_head, wcap_);
  EXPECT_EQ(t->Acquire(HeldWord(9, false), 2ms, nullptr).status().code(), Errc::kTimeout);
  raw_->h->queue_head = 1ULL << 62;  // tail < head
  raw_->h->queue_tail = 5;
  raw_->h->waiters.store(3);  // a count to match
  t->Pump();
  EXPECT_LE(raw_->h->queue_tail - raw_->h->queue_head, wcap_);
  EXPECT_EQ(t->Count().waiters, 0u);
  t->Release(slot, w);
  EXPECT_TRUE(t->Acquire(w, 1s, nullptr).ok());
}

// ---- #5: reclaim of a retiring slot ----------------------------------------

TEST_F(QueueRepairTest, ReclaimQuarantinesRetiringSlotsToo) {
  auto t = Make(4, 2);
  const std::uint32_t owner = t->AllocateOwner();
  const std::uint64_t w = HeldWord(owner, false);
  ASSERT_NE(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  ASSERT_NE(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  ASSERT_TRUE(t->SetCapacity(1));  // one of them retiring
  ASSERT_EQ(t->Count().retiring, 1u);
  const auto q = t->Reclaim(owner, true);
  EXPECT_EQ(q.size(), 2u) << "the retiring slot skipped quarantine";
  EXPECT_EQ(t->Count().quarantined, 2u);
  for (auto i : q) t->EndQuarantine(i);
  const Counts c = t->Count();
  EXPECT_EQ(c.enabled, 1u);
  EXPECT_EQ(c.free, 1u);
}

// ---- Lease region (issue 8: B1 at the deadline, no mutex) -------------------

// Past the deadline only the floor region [0, floor) hands out slots, on the
// fast path as well as through the queue; before it the whole capacity does.
TEST_F(QueueRepairTest, LeaseRegionSlotsAreRefusedFromTheDeadlineOn) {
  auto t = Make(16, 12);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  t->SetLeaseFence(4, 1);  // a deadline long past (CLOCK_MONOTONIC ns 1)
  std::vector<std::uint32_t> got;
  for (int i = 0; i < 12; ++i) {
    const std::uint32_t idx = t->TryAcquireIndex(w);
    if (idx == SlotTable::kNoSlot) break;
    got.push_back(idx);
  }
  ASSERT_EQ(got.size(), 4u) << "lease-region slots were handed out past the deadline";
  for (std::uint32_t idx : got) EXPECT_LT(idx, 4u);
  EXPECT_EQ(t->Acquire(w, 5ms, nullptr).status().code(), Errc::kTimeout);
  EXPECT_EQ(t->Count().held_action, 4u) << "a refused take was not given back";
  t->SetLeaseFence(4, MonotonicNs() + 60'000'000'000);  // renewed
  for (int i = 0; i < 8; ++i) EXPECT_NE(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  EXPECT_EQ(t->TryAcquireIndex(w), SlotTable::kNoSlot);  // capacity 12
}

TEST_F(QueueRepairTest, AHeldLeaseSlotShouldYieldAtTheDeadline) {
  detail::tl_hint = 0;  // takes go 0, 1, 2, ...
  auto t = Make(8, 8);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  const std::int64_t deadline = MonotonicNs() + 30'000'000;
  t->SetLeaseFence(2, deadline);
  std::vector<std::uint32_t> got;
  for (int i = 0; i < 8; ++i) got.push_back(t->TryAcquireIndex(w));
  for (std::uint32_t idx : got) ASSERT_NE(idx, SlotTable::kNoSlot);
  for (std::uint32_t idx : got) EXPECT_FALSE(t->InLapsedLease(idx));
  SleepPast(deadline);  // the clock is the event
  for (std::uint32_t idx : got) EXPECT_EQ(t->InLapsedLease(idx), idx >= 2) << idx;
  // Released past the deadline, a lease slot serves nobody.
  t->Release(got[7], w);
  EXPECT_EQ(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  t->Release(got[0], w);
  EXPECT_EQ(t->TryAcquireIndex(w), got[0]);
}

// A queued waiter is not granted a lease-region slot past the deadline.
TEST_F(QueueRepairTest, APumpGrantsNoLeaseSlotPastTheDeadline) {
  detail::tl_hint = 0;  // takes go 0, 1, 2, ...
  auto t = Make(4, 4);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  std::uint32_t held[4];
  for (auto& i : held) i = t->TryAcquireIndex(holder);
  t->SetLeaseFence(2, 1);  // lapsed
  raw_->Queue(w, kWaitWaiting, wcap_);
  raw_->h->waiters.store(1);
  t->Release(held[3], holder);  // slot 3: lease region
  EXPECT_EQ(raw_->h->waiters.load(), 1u);
  EXPECT_EQ(raw_->slots[held[3]].word.load(), kFree);
  t->Release(held[0], holder);  // slot 0: floor region, granted
  EXPECT_EQ(raw_->h->waiters.load(), 0u);
  EXPECT_EQ(raw_->slots[held[0]].word.load(), w | kGrantBit);
}

// Many processes' watchdogs see one lapse: the generation rises once, and no
// slot or capacity changes (only the broker changes capacity).
TEST_F(QueueRepairTest, ALapseIsNotedOnceAndChangesNoSlot) {
  auto broker = Make(16, 12);
  auto c1 = SlotTable::Attach(name_);
  auto c2 = SlotTable::Attach(name_);
  ASSERT_TRUE(c1.ok() && c2.ok());
  for (int trial = 0; trial < 200; ++trial) {
    broker->SetLeaseFence(4, 1 + trial);
    const std::uint64_t gen = broker->revocation_generation();
    std::atomic<int> go{0};
    std::atomic<int> acted{0};
    auto note = [&](SlotTable* c) {
      go.fetch_add(1);
      while (go.load() < 2) {
      }
      if (c->NoteLeaseLapse(MonotonicNs())) acted.fetch_add(1);
    };
    std::thread x(note, c1->get());
    std::thread y(note, c2->get());
    x.join();
    y.join();
    ASSERT_EQ(acted.load(), 1) << "trial " << trial;
    ASSERT_EQ(broker->revocation_generation(), gen + 1);
    const Counts c = broker->Count();
    ASSERT_EQ(c.capacity, 12u);
    ASSERT_EQ(c.enabled, 12u);
    ASSERT_EQ(broker->lease_deadline_ns(), 1 + trial) << "a client cleared the deadline";
  }
}

// The broker keeps the floor in the low indices: slots it enables go there
// first, and a free lease-region slot is traded for a disabled floor slot.
TEST_F(QueueRepairTest, TheFloorStaysInTheLowIndices) {
  detail::tl_hint = 0;  // takes go 0, 1, 2, ...
  auto t = Make(8, 0);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  t->SetCapacity(6);
  std::uint32_t held[6];
  for (auto& i : held) i = t->TryAcquireIndex(w);
  t->Release(held[0], w);
  t->Release(held[1], w);
  t->SetLeaseFence(2, 0);
  t->SetCapacity(4);  // disables the free floor slots 0 and 1, keeps 2..5 held
  EXPECT_EQ(raw_->slots[0].word.load(), kDisabled);
  t->Release(held[5], w);
  t->SetLeaseFence(2, 0);  // the next renewal trades 5 for a floor slot
  EXPECT_EQ(raw_->slots[0].word.load(), kFree);
  EXPECT_EQ(raw_->slots[1].word.load(), kDisabled);
  EXPECT_EQ(raw_->slots[5].word.load(), kDisabled);
  EXPECT_EQ(t->Count().enabled, 4u);
}

// ---- Issue 14: a process killed inside a summary update, at 2048 slots -------

// Every bit of `need` set in `have`.
bool Covers(const SlotTable::SummaryWords& have, const SlotTable::SummaryWords& need) {
  const auto covers = [](const std::vector<std::uint64_t>& h, const std::vector<std::uint64_t>& n) {
    if (h.size() != n.size()) return false;
    for (std::size_t i = 0; i < h.size(); ++i) {
      if ((n[i] & ~h[i]) != 0) return false;
    }
    return true;
  };
  return covers(have.free_top, need.free_top) && covers(have.free_leaf, need.free_leaf) &&
         covers(have.cool_top, need.cool_top) && covers(have.cool_leaf, need.cool_leaf);
}

// Where the process died. A release is CAS word -> kFree, set the leaf bit,
// set the top bit, pump (under the queue mutex); a lazy clear of a stale bit
// is AND the bit, re-read the word, set the bit again if the slot is free.
enum SummaryCrash {
  kAfterReleaseCas,      // the word is free, neither bit set
  kAfterLeafBit,         // the leaf bit set, the top bit not
  kInClearBeforeRecheck, // the leaf bit of a free slot cleared, no re-check
  kInTopClearBeforeRecheck,  // the top bit over a non-empty leaf cleared
  kInPumpHoldingTheMutex,    // both bits set, died holding the queue mutex
};

class SummaryCrashTest : public QueueRepairTest,
                         public ::testing::WithParamInterface<SummaryCrash> {};

// At capacity 2048, all slots held and one waiter queued: a process dies at
// each point of a summary update over slot 1337. The broker's Reclaim of the
// dead owner repairs the summary and its pump serves the waiter from that
// slot; the repaired summary equals the one recomputed from the slot words.
TEST_P(SummaryCrashTest, TheBrokersReclaimRepairsTheSummaryAndServesTheWaiter) {
  constexpr std::uint32_t kSlots = 2048;
  constexpr std::uint32_t kX = 1337;
  detail::tl_hint = 0;
  auto t = Make(kSlots, kSlots);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint32_t dead = t->AllocateOwner();
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    ASSERT_EQ(t->TryAcquireIndex(i == kX ? HeldWord(dead, false) : holder), i);
  }
  (void)t->RepairSummary();  // no stale bits: the crash alone decides what is there
  WaitEntry& e = raw_->Queue(w, kWaitWaiting, wcap_);
  raw_->h->waiters.store(1);
  // The dying process's steps, as raw writes; it dies after the last one.
  const std::uint64_t bit = 1ULL << (kX % 64);
  const std::uint64_t tbit = 1ULL << (kX / 64 % 64);
  std::atomic<std::uint64_t>& leaf = raw_->free_leaf[kX / 64];
  std::atomic<std::uint64_t>& top = raw_->free_top[kX / 64 / 64];
  std::uint64_t expected = HeldWord(dead, false);
  ASSERT_TRUE(raw_->slots[kX].word.compare_exchange_strong(expected, kFree));
  switch (GetParam()) {
    case kAfterReleaseCas:
      break;
    case kAfterLeafBit:
      leaf.fetch_or(bit);
      break;
    case kInClearBeforeRecheck:
      leaf.fetch_or(bit);
      top.fetch_or(tbit);
      leaf.fetch_and(~bit);
      break;
    case kInTopClearBeforeRecheck:
      leaf.fetch_or(bit);
      top.fetch_or(tbit);
      top.fetch_and(~tbit);
      break;
    case kInPumpHoldingTheMutex:
      leaf.fetch_or(bit);
      top.fetch_or(tbit);
      raw_->KillMutexHolder();
      break;
  }
  // Nothing else frees a slot; the summary (but for the mutex case) hides
  // kX from every taker until a rescan or the broker.
  raw_->h->summary_scan_ns.store(MonotonicNs());
  std::uint32_t freed = 0;
  t->Reclaim(dead, false, &freed);
  EXPECT_EQ(freed, 0u) << "the dead owner had already given its slot back";
  EXPECT_EQ(e.state.load(), kWaitGranted) << "the waiter was not served";
  EXPECT_EQ(e.slot, kX);
  EXPECT_EQ(raw_->slots[kX].word.load(), w | kGrantBit);
  EXPECT_EQ(t->Count().waiters, 0u);
  EXPECT_EQ(t->Count().free, 0u);
  EXPECT_TRUE(Covers(t->Summary(), t->SummaryFromWords()));
  (void)t->RepairSummary();
  EXPECT_EQ(t->Summary(), t->SummaryFromWords());
  if (GetParam() == kInPumpHoldingTheMutex) {
    EXPECT_EQ(t->queue_repairs(), 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryPoint, SummaryCrashTest,
                         ::testing::Values(kAfterReleaseCas, kAfterLeafBit, kInClearBeforeRecheck,
                                           kInTopClearBeforeRecheck, kInPumpHoldingTheMutex));

}  // namespace
}  // namespace dsb::shm
