// The slot table's summary (issue 14; segment_layout.h, "The summary"): the
// free and cooling bitmaps that let a taker find a slot without a scan. The
// slot words stay the truth; these tests break the summary the ways a crash
// or a hostile write can (stale 1s, stale 0s, an empty summary) and check
// that takers and the broker's repair keep every slot reachable, and that
// capacity changes, cooling, quarantine and the lease fence keep the hints
// right without letting a taker skip a check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "shm/slot_table.h"
#include <thread>

#include "tests/shm/segment_fixture.h"
#include "tests/support/wait.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;

// Every bit of `need` is set in `have` (no stale 0; stale 1s allowed).
bool Covers(const std::vector<std::uint64_t>& have, const std::vector<std::uint64_t>& need) {
  if (have.size() != need.size()) return false;
  for (std::size_t i = 0; i < have.size(); ++i) {
    if ((need[i] & ~have[i]) != 0) return false;
  }
  return true;
}
bool Covers(const SlotTable::SummaryWords& have, const SlotTable::SummaryWords& need) {
  return Covers(have.free_top, need.free_top) && Covers(have.free_leaf, need.free_leaf) &&
         Covers(have.cool_top, need.cool_top) && Covers(have.cool_leaf, need.cool_leaf);
}

class SummaryTest : public SegmentFixture {
 protected:
  std::unique_ptr<SlotTable> MakeTable(std::uint32_t slots, std::uint32_t capacity,
                                       std::chrono::nanoseconds cooldown = {}) {
    slots_ = slots;
    detail::tl_hint = 0;  // fills go 0, 1, 2, ...
    auto t = Make(slots, capacity, cooldown, kWaiters);
    view_ = std::make_unique<SegmentView>(name_);
    EXPECT_TRUE(view_->ok());
    return t;
  }
  // The raw summary words, as another process sees them.
  std::atomic<std::uint64_t>* Region() const {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(
        view_->data() + HeaderBytes() + std::size_t{kWaiters} * sizeof(WaitEntry) +
        std::size_t{slots_} * sizeof(SlotCell));
  }
  std::atomic<std::uint64_t>* FreeLeaf() const {
    return Region() + SummaryTopBytes(slots_) / sizeof(std::uint64_t);
  }
  SegmentHeader* Header() const { return reinterpret_cast<SegmentHeader*>(view_->data()); }
  SlotCell* Slots() const {
    return reinterpret_cast<SlotCell*>(view_->data() + HeaderBytes() +
                                       std::size_t{kWaiters} * sizeof(WaitEntry));
  }
  // As a killed process or a hostile writer may leave it: no bit at all.
  void ZeroSummary() const { std::memset(static_cast<void*>(Region()), 0, SummaryBytes(slots_)); }
  // Makes the next rescan not due (as if one just ran), so a test sees what
  // the summary alone finds.
  void RescanJustRan() const { Header()->summary_scan_ns.store(MonotonicNs()); }

  static constexpr std::uint32_t kWaiters = 8;
  std::uint32_t slots_ = 0;
  std::unique_ptr<SegmentView> view_;
};

// Nearly full at 2048: the one free slot, wherever it is, is found with a
// stale hint, and the summary covers every free slot at every step.
TEST_F(SummaryTest, TheOneFreeSlotIsFoundWithAStaleHintAtEveryPosition) {
  constexpr std::uint32_t kSlots = 2048;
  auto t = MakeTable(kSlots, kSlots);
  const std::uint64_t others = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t me = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < kSlots; ++i) ASSERT_EQ(t->TryAcquireIndex(others), i);
  EXPECT_EQ(t->TryAcquireIndex(me), SlotTable::kNoSlot);
  const std::uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 200; ++round) {
    const auto free_at = static_cast<std::uint32_t>(rng() % kSlots);
    t->Release(free_at, others);
    ASSERT_TRUE(Covers(t->Summary(), t->SummaryFromWords())) << "round " << round;
    RescanJustRan();  // the summary alone must find it
    detail::tl_hint = static_cast<std::uint32_t>((free_at + 1 + rng() % (kSlots - 1)) % kSlots);
    ASSERT_EQ(t->TryAcquireIndex(me), free_at) << "round " << round;
    t->Release(free_at, me);
    ASSERT_EQ(t->TryAcquireIndex(others), free_at);
  }
  (void)t->RepairSummary();
  EXPECT_EQ(t->Summary(), t->SummaryFromWords());
}

// A stale 1 (the bit of a slot someone took) costs the next taker one look:
// it takes the next free slot and clears the stale bit.
TEST_F(SummaryTest, AStaleOneIsSkippedAndCleared) {
  auto t = MakeTable(256, 256);
  const std::uint64_t a = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t b = HeldWord(t->AllocateOwner(), false);
  detail::tl_hint = 0;
  ASSERT_EQ(t->TryAcquireIndex(a), 0u);  // through the hint: bit 0 stays set
  EXPECT_EQ(t->Summary().free_leaf[0] & 1, 1u) << "a take writes no summary word";
  detail::tl_hint = 200;
  ASSERT_EQ(t->TryAcquireIndex(b), 200u);  // through the hint too
  detail::tl_hint = 0;                     // stale: slot 0 is a's
  EXPECT_EQ(t->TryAcquireIndex(b), 1u);
  EXPECT_EQ(t->Summary().free_leaf[0] & 1, 0u) << "the stale 1 was not cleared";
  const SlotTable::SummaryRepair r = t->RepairSummary();
  EXPECT_EQ(r.set, 0u);
  EXPECT_EQ(r.cleared, 2u);  // bits 1 (taken through the summary) and 200
  EXPECT_EQ(t->Summary(), t->SummaryFromWords());
}

// A stale 0: a client killed between its release CAS and its bit. The
// summary alone no longer finds the slot; the broker's repair (on Reclaim of
// any dead owner, and on Audit) puts the bit back.
TEST_F(SummaryTest, AStaleZeroIsRepairedByReclaimAndByAudit) {
  auto t = MakeTable(512, 512);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint32_t dead = t->AllocateOwner();
  const std::uint64_t me = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < 512; ++i) ASSERT_EQ(t->TryAcquireIndex(holder), i);
  for (int way = 0; way < 2; ++way) {
    // Slot 300 released by a process that died before its bit: the word
    // is free, the summary says nothing.
    const std::uint32_t idx = 300 + static_cast<std::uint32_t>(way);
    t->Release(idx, holder);
    ZeroSummary();
    RescanJustRan();
    detail::tl_hint = 0;
    EXPECT_EQ(t->TryAcquireIndex(me), SlotTable::kNoSlot) << "the summary decides nothing here";
    if (way == 0) {
      t->Reclaim(dead, false);  // the broker learns of a death: repairs
    } else {
      SlotTable::AuditPolicy p;
      p.now_ns = MonotonicNs();
      p.cooling_horizon_ns = p.now_ns;
      const SlotTable::AuditFindings f = t->Audit(p);
      EXPECT_GE(f.summary.set, 1u);
    }
    EXPECT_EQ(t->Summary(), t->SummaryFromWords()) << "way " << way;
    EXPECT_EQ(t->TryAcquireIndex(me), idx);
    t->Release(idx, me);
    ASSERT_EQ(t->TryAcquireIndex(holder), idx);
  }
}

// With no broker at all, a summary that offers nothing makes one taker per
// kSummaryRescanNs rescan the words: it finds the slot and repairs the bits.
TEST_F(SummaryTest, AnEmptySummaryFallsBackToOneRescanThatRepairsIt) {
  auto t = MakeTable(2048, 2048);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t me = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < 2048; ++i) ASSERT_EQ(t->TryAcquireIndex(holder), i);
  for (const std::uint32_t idx : {5u, 700u, 2047u}) t->Release(idx, holder);
  ZeroSummary();
  Header()->summary_scan_ns.store(0);  // due
  detail::tl_hint = 1000;
  EXPECT_EQ(t->TryAcquireIndex(me), 5u);
  // The rescan set the bits of the other two.
  EXPECT_TRUE(Covers(t->Summary(), t->SummaryFromWords()));
  RescanJustRan();
  EXPECT_EQ(t->TryAcquireIndex(me), 700u);
  EXPECT_EQ(t->TryAcquireIndex(me), 2047u);
  EXPECT_EQ(t->TryAcquireIndex(me), SlotTable::kNoSlot);
}

// A queued waiter is served from a slot only a rescan can find (freed by a
// process that died before its bit): its own periodic pump rescans.
TEST_F(SummaryTest, AWaiterIsServedByAPumpsRescanWhenTheSummaryMissesTheSlot) {
  auto t = MakeTable(128, 128);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t me = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < 128; ++i) ASSERT_EQ(t->TryAcquireIndex(holder), i);
  Result<std::uint32_t> got = Status{Errc::kTimeout, "not run"};
  std::thread waiter([&] { got = t->Acquire(me, 20s, nullptr); });
  ASSERT_TRUE(dsb::testing::WaitUntil([&] { return t->Count().waiters == 1; }, 10000ms));
  // The release CAS of a process that dies before its bit: the word only.
  Slots()[77].word.store(kFree);
  Header()->summary_scan_ns.store(0);  // the next pump's rescan is due
  waiter.join();                       // served within a poll interval
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, 77u);
}

// Capacity changes keep every enabled free slot's bit, and a shrink leaves
// no bit a taker could use past the capacity.
TEST_F(SummaryTest, CapacityGrowAndShrinkKeepTheHints) {
  auto t = MakeTable(2048, 100);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  EXPECT_EQ(t->Summary(), t->SummaryFromWords());
  t->SetCapacity(2000);
  EXPECT_TRUE(Covers(t->Summary(), t->SummaryFromWords()));
  std::set<std::uint32_t> got;
  for (int i = 0; i < 2000; ++i) {
    detail::tl_hint = 0;
    const std::uint32_t idx = t->TryAcquireIndex(w);
    ASSERT_NE(idx, SlotTable::kNoSlot) << i;
    ASSERT_TRUE(got.insert(idx).second) << "slot " << idx << " handed out twice";
  }
  EXPECT_EQ(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  t->SetCapacity(10);  // held slots retire
  for (const std::uint32_t idx : got) t->Release(idx, w);
  EXPECT_EQ(t->Count().enabled, 10u);
  EXPECT_TRUE(Covers(t->Summary(), t->SummaryFromWords()));
  std::set<std::uint32_t> again;
  for (int i = 0; i < 11; ++i) {
    const std::uint32_t idx = t->TryAcquireIndex(w);
    if (idx == SlotTable::kNoSlot) break;
    again.insert(idx);
  }
  EXPECT_EQ(again.size(), 10u) << "a shrink let a taker past the capacity";
  t->SetCapacity(1500);
  EXPECT_TRUE(Covers(t->Summary(), t->SummaryFromWords()));
  int more = 0;
  while (t->TryAcquireIndex(w) != SlotTable::kNoSlot) ++more;
  EXPECT_EQ(more, 1490);
  (void)t->RepairSummary();
  EXPECT_EQ(t->Summary(), t->SummaryFromWords());
}

// Cooling and quarantined slots are not offered; a cooling slot is, through
// the cooling map, once its cooldown has ended.
TEST_F(SummaryTest, CoolingAndQuarantinedSlotsAreSkipped) {
  auto t = MakeTable(1024, 1024, 1h);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint32_t dead = t->AllocateOwner();
  const std::uint64_t me = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < 1023; ++i) ASSERT_EQ(t->TryAcquireIndex(holder), i);
  ASSERT_EQ(t->TryAcquireIndex(HeldWord(dead, false)), 1023u);
  t->Release(600, holder);  // cooling for an hour
  t->Reclaim(dead, true);   // slot 1023 quarantined
  ASSERT_EQ(t->Count().cooling, 1u);
  ASSERT_EQ(t->Count().quarantined, 1u);
  const SlotTable::SummaryWords s = t->Summary();
  EXPECT_EQ(s.free_leaf[600 / 64] >> (600 % 64) & 1, 0u);
  EXPECT_EQ(s.cool_leaf[600 / 64] >> (600 % 64) & 1, 1u);
  EXPECT_EQ(s, t->SummaryFromWords());
  Header()->summary_scan_ns.store(0);  // even a rescan must not hand them out
  EXPECT_EQ(t->TryAcquireIndex(me), SlotTable::kNoSlot);
  t->EndQuarantine(1023);
  detail::tl_hint = 0;
  EXPECT_EQ(t->TryAcquireIndex(me), 1023u);
}

#ifndef _WIN32
TEST_F(SummaryTest, ACoolingSlotIsTakenThroughTheCoolingMapAfterItsDeadline) {
  auto t = MakeTable(1024, 1024, 2ms);
  const std::uint64_t holder = HeldWord(t->AllocateOwner(), false);
  const std::uint64_t me = HeldWord(t->AllocateOwner(), false);
  for (std::uint32_t i = 0; i < 1024; ++i) ASSERT_EQ(t->TryAcquireIndex(holder), i);
  const std::int64_t released = MonotonicNs();
  t->Release(900, holder);
  dsb::testing::SleepUntilMonotonicNs(released + 3'000'000);  // the clock is the event
  RescanJustRan();  // the cooling map alone
  detail::tl_hint = 0;
  EXPECT_EQ(t->TryAcquireIndex(me), 900u);
}
#endif

// The bitmap only chooses where to look: past the lease deadline a taker
// that finds a lease-region slot through it still gives it back.
TEST_F(SummaryTest, TheLeaseFenceHoldsWhateverTheSummarySays) {
  auto t = MakeTable(2048, 2048);
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  t->SetLeaseFence(16, 1);  // lapsed
  std::vector<std::uint32_t> got;
  for (int i = 0; i < 100; ++i) {
    detail::tl_hint = 1500;  // a lease-region slot: refused, given back
    const std::uint32_t idx = t->TryAcquireIndex(w);
    if (idx == SlotTable::kNoSlot) break;
    got.push_back(idx);
  }
  ASSERT_EQ(got.size(), 16u);
  for (const std::uint32_t idx : got) EXPECT_LT(idx, 16u);
  EXPECT_EQ(t->Count().held_action, 16u);
  EXPECT_TRUE(Covers(t->Summary(), t->SummaryFromWords()));
}

// Bits a hostile writer set past the table are ignored and cleared.
TEST_F(SummaryTest, HostileBitsArePassedAndRepaired) {
  auto t = MakeTable(100, 100);  // 2 leaf words, the last one half used
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  for (int i = 0; i < 100; ++i) ASSERT_NE(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  std::memset(static_cast<void*>(Region()), 0xFF, SummaryBytes(slots_));
  RescanJustRan();
  EXPECT_EQ(t->TryAcquireIndex(w), SlotTable::kNoSlot);
  (void)t->RepairSummary();
  EXPECT_EQ(t->Summary(), t->SummaryFromWords());
  EXPECT_EQ(FreeLeaf()[1].load(), 0u);
}

}  // namespace
}  // namespace dsb::shm
