// Release cooldown (issue 7, 1b): a released slot stays "cooling" in the slot
// table until the server has stopped counting its session.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "shm/slot_table.h"
#include "tests/shm/segment_fixture.h"
#include "tests/support/wait.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kMs = 1'000'000;

using CoolingTest = SegmentFixture;

const std::uint64_t kW = HeldWord(5, false);

TEST_F(CoolingTest, ReleasedSlotIsNotReusableBeforeTheDeadlineAndIsAfter) {
  auto t = Make(8, 1, 200ms);
  ASSERT_EQ(t->release_cooldown_ns(), 200 * kMs);
  auto a = SlotTable::Attach(name_);
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ((*a)->release_cooldown_ns(), 200 * kMs);  // clients read it from the segment

  const std::uint32_t idx = t->TryAcquireIndex(kW);
  ASSERT_NE(idx, SlotTable::kNoSlot);
  const std::int64_t released = MonotonicNs();
  (*a)->Release(idx, kW);
  EXPECT_EQ((*a)->TryAcquireIndex(kW), SlotTable::kNoSlot);
  Counts c = t->Count();
  EXPECT_EQ(c.cooling, 1u);
  EXPECT_EQ(c.free, 0u);
  EXPECT_EQ(c.enabled, 1u);  // still part of the capacity

  // The event: a blocking Acquire returns once the cooldown ends.
  auto got = (*a)->Acquire(kW, 10s, nullptr);
  const std::int64_t took = MonotonicNs() - released;
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, idx);
  EXPECT_GE(took, 200 * kMs);
  EXPECT_LT(took, 5000 * kMs);
  c = t->Count();
  EXPECT_EQ(c.cooling, 0u);
  EXPECT_EQ(c.held_action, 1u);
}

TEST_F(CoolingTest, TryAcquireTakesAnExpiredCoolingSlotWithoutHelp) {
  auto t = Make(4, 1, 20ms);
  const std::uint32_t idx = t->TryAcquireIndex(kW);
  ASSERT_NE(idx, SlotTable::kNoSlot);
  t->Release(idx, kW);
  const std::int64_t deadline = MonotonicNs() + 20 * kMs;
  EXPECT_EQ(t->TryAcquireIndex(kW), SlotTable::kNoSlot);
  // Nobody turns the word back into kFree: the taker CASes the cooling word.
  // The event is the clock passing the deadline (no process is involved).
  ASSERT_TRUE(dsb::testing::WaitUntil([&] { return MonotonicNs() > deadline; }, 5000ms));
  EXPECT_EQ(t->Count().free, 1u);  // past its deadline it counts as free
  EXPECT_EQ(t->TryAcquireIndex(kW), idx);
}

TEST_F(CoolingTest, ConfirmedReleaseFreesAtOnce) {
  auto t = Make(8, 1, 1h);
  const std::uint32_t idx = t->TryAcquireIndex(kW);
  ASSERT_NE(idx, SlotTable::kNoSlot);
  t->ReleaseConfirmed(idx, kW);
  EXPECT_EQ(t->Count().cooling, 0u);
  EXPECT_EQ(t->TryAcquireIndex(kW), idx);
}

TEST_F(CoolingTest, NoCooldownFreesAtOnce) {
  auto t = Make(8, 1, 0ns);
  const std::uint32_t idx = t->TryAcquireIndex(kW);
  t->Release(idx, kW);
  EXPECT_EQ(t->TryAcquireIndex(kW), idx);
}

TEST_F(CoolingTest, QueuedWaiterIsServedWhenTheCooldownEndsWithNoFurtherRelease) {
  auto t = Make(8, 1, 150ms);
  const std::uint32_t idx = t->TryAcquireIndex(kW);
  ASSERT_NE(idx, SlotTable::kNoSlot);
  const std::uint64_t other = HeldWord(6, false);
  std::atomic<std::int64_t> served_at{0};
  std::atomic<bool> ok{false};
  std::thread waiter([&] {
    auto a = SlotTable::Attach(name_);
    if (!a.ok()) return;
    auto got = (*a)->Acquire(other, 10s, nullptr);  // queues: nothing free
    served_at = MonotonicNs();
    ok = got.ok();
  });
  // The waiter is queued before the release (the release pumps nothing: the
  // slot is cooling), so only its own timed wake can serve it.
  while (t->Count().waiters == 0) std::this_thread::yield();
  const std::int64_t released = MonotonicNs();
  t->Release(idx, kW);
  waiter.join();
  ASSERT_TRUE(ok);
  EXPECT_GE(served_at - released, 150 * kMs);
  EXPECT_LT(served_at - released, 5000 * kMs);
  EXPECT_EQ(t->Count().held_action, 1u);
}

TEST_F(CoolingTest, WaitersAreServedInOrderAsCooldownsEnd) {
  auto t = Make(8, 2, 100ms);
  const std::uint32_t a = t->TryAcquireIndex(kW);
  const std::uint32_t b = t->TryAcquireIndex(kW);
  ASSERT_NE(b, SlotTable::kNoSlot);
  t->Release(a, kW);
  t->Release(b, kW);
  std::atomic<int> served{0};
  std::vector<std::thread> ws;
  for (std::uint32_t i = 0; i < 3; ++i) {
    ws.emplace_back([&, i] {
      auto got = t->Acquire(HeldWord(10 + i, false), 600ms, nullptr);
      if (got.ok()) ++served;
    });
  }
  for (auto& w : ws) w.join();
  EXPECT_EQ(served.load(), 2);  // two slots came back, the third waiter timed out
}

TEST_F(CoolingTest, ShrinkWhileCoolingNeverLetsUsableSlotsExceedCapacity) {
  auto t = Make(8, 4, 100ms);
  std::vector<std::uint32_t> held;
  for (int i = 0; i < 4; ++i) held.push_back(t->TryAcquireIndex(kW));
  for (int i = 0; i < 3; ++i) t->Release(held[static_cast<std::size_t>(i)], kW);  // 3 cooling, 1 held
  EXPECT_FALSE(t->SetCapacity(2));  // cooling slots go first: no held slot asked back
  Counts c = t->Count();
  EXPECT_EQ(c.capacity, 2u);
  EXPECT_EQ(c.enabled, 2u);  // 1 held + 1 cooling
  EXPECT_EQ(c.cooling, 3u);  // all still counted: the server may count them
  EXPECT_EQ(c.cooling_retiring, 2u);
  EXPECT_EQ(c.retiring, 0u);
  // After the cooldown only one slot comes back (held 1 + usable 1 = 2).
  auto got = t->Acquire(kW, 5s, nullptr);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(t->TryAcquireIndex(kW), SlotTable::kNoSlot);
  c = t->Count();
  EXPECT_EQ(c.held_action, 2u);
  EXPECT_EQ(c.cooling, 0u);
  EXPECT_EQ(c.enabled, 2u);
  // Shrinking below the held count with nothing cooling still retires held slots.
  EXPECT_TRUE(t->SetCapacity(1));
}

TEST_F(CoolingTest, GrowingUnretiresCoolingSlotsBeforeEnablingNewOnes) {
  auto t = Make(8, 2, 1h);
  const std::uint32_t a = t->TryAcquireIndex(kW);
  const std::uint32_t b = t->TryAcquireIndex(kW);
  t->Release(a, kW);
  t->Release(b, kW);
  t->SetCapacity(0);
  EXPECT_EQ(t->Count().cooling_retiring, 2u);
  t->SetCapacity(2);
  const Counts c = t->Count();
  EXPECT_EQ(c.cooling_retiring, 0u);
  EXPECT_EQ(c.enabled, 2u);
  EXPECT_EQ(c.free, 0u);  // no new slot: the two cooling ones are the capacity
}

TEST_F(CoolingTest, RetiringSlotReleasedIntoCoolingIsDisabledWhenItEnds) {
  auto t = Make(8, 2, 100ms);
  const std::uint32_t a = t->TryAcquireIndex(kW);
  const std::uint32_t b = t->TryAcquireIndex(kW);
  ASSERT_NE(b, SlotTable::kNoSlot);
  ASSERT_TRUE(t->SetCapacity(1));  // one held slot asked back
  const std::uint32_t retiring = t->StillHeld(a, kW) ? b : a;
  const std::uint32_t kept = retiring == a ? b : a;
  EXPECT_FALSE(t->StillHeld(retiring, kW));
  t->Release(retiring, kW);
  Counts c = t->Count();
  EXPECT_EQ(c.cooling, 1u);  // still counted: the server may still count it
  EXPECT_EQ(c.cooling_retiring, 1u);
  EXPECT_EQ(c.enabled, 1u);
  // A waiter for the one slot left is served only by the kept slot's release.
  t->Release(kept, kW);
  auto got = t->Acquire(kW, 5s, nullptr);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, kept);
  EXPECT_EQ(t->TryAcquireIndex(kW), SlotTable::kNoSlot);  // the retired one never comes back
  c = t->Count();
  EXPECT_EQ(c.cooling, 0u);
  EXPECT_EQ(c.enabled, 1u);
  EXPECT_EQ(c.held_action, 1u);
}

TEST_F(CoolingTest, ReclaimLeavesCoolingSlotsAlone) {
  auto t = Make(8, 2, 1h);
  const std::uint32_t a = t->TryAcquireIndex(kW);
  ASSERT_NE(t->TryAcquireIndex(kW), SlotTable::kNoSlot);
  t->Release(a, kW);
  std::uint32_t freed = 0;
  const auto q = t->Reclaim(OwnerOf(kW), /*quarantine=*/false, &freed);
  EXPECT_EQ(freed, 1u);  // the held one only
  EXPECT_TRUE(q.empty());
  const Counts c = t->Count();
  EXPECT_EQ(c.cooling, 1u);
  EXPECT_EQ(c.free, 1u);
}

// The property the cooldown exists for: a slot is never handed out while the
// server (modelled here) still counts its previous session, which it does for
// `lag` after the client's release. Fails with a cooldown of 0.
TEST_F(CoolingTest, NoSlotIsReusedWhileTheServerStillCountsItsSession) {
  constexpr std::int64_t kLag = 3 * kMs;
  auto t = Make(8, 3, std::chrono::nanoseconds(kLag));
  std::vector<std::atomic<std::int64_t>> server_until(8);
  std::atomic<int> violations{0};
  std::atomic<int> actions{0};
  const auto end = std::chrono::steady_clock::now() + 1500ms;
  std::vector<std::thread> threads;
  for (std::uint32_t k = 0; k < 6; ++k) {
    threads.emplace_back([&, k] {
      const std::uint64_t w = HeldWord(20 + k, false);
      for (int n = 0; n < 2000 && std::chrono::steady_clock::now() < end; ++n) {
        auto got = t->Acquire(w, 2s, nullptr);
        if (!got.ok()) continue;
        if (MonotonicNs() < server_until[*got].load()) ++violations;
        ++actions;
        std::this_thread::sleep_for(200us);  // the session's work
        server_until[*got].store(MonotonicNs() + kLag);  // the server ends it later
        t->Release(*got, w);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(actions.load(), 50);
  EXPECT_EQ(t->Count().held_action, 0u);
}

TEST_F(CoolingTest, HostileCoolingWordsNeitherCrashNorSpin) {
  auto t = Make(4, 4, 10ms);
  auto a = SlotTable::Attach(name_);
  ASSERT_TRUE(a.ok());
  // Hold every slot, then overwrite the words as a hostile process would.
  std::vector<std::uint32_t> idx;
  for (int i = 0; i < 4; ++i) idx.push_back(t->TryAcquireIndex(kW));
  // Write the words through a second mapping, as another process could.
  SegmentView bytes(name_);
  ASSERT_TRUE(bytes.ok());
  const std::size_t slots_at = HeaderBytes() + std::size_t{kDefaultWaiterCapacity} * sizeof(WaitEntry);
  const std::uint64_t garbage[4] = {
      kCoolingBit | kCoolDeadlineMask,                 // deadline 36 years ahead: garbage
      kCoolingBit | kRetireBit | kCoolDeadlineMask,    // same, retiring
      kCoolingBit | (1ULL << 60) | 5,                  // stray bit, deadline long past
      kCoolingBit | static_cast<std::uint64_t>(MonotonicNs() + 40 * kMs),  // genuine
  };
  for (std::uint32_t i = 0; i < 4; ++i) {
    const std::size_t at = slots_at + idx[i] * sizeof(SlotCell);
    ASSERT_LE(at + sizeof garbage[i], bytes.size());
    reinterpret_cast<std::atomic<std::uint64_t>*>(bytes.data() + at)->store(garbage[i]);
  }
  const Counts c = t->Count();  // no crash; garbage deadlines count as ended
  EXPECT_EQ(c.cooling, 1u);
  EXPECT_EQ(c.free, 2u);
  // The two usable garbage slots are taken, the retiring one is disabled, the
  // genuine one after its deadline; every call returns in bounded time.
  const auto start = std::chrono::steady_clock::now();
  int got = 0;
  for (int i = 0; i < 3; ++i) {
    auto r = (*a)->Acquire(HeldWord(9, false), 2s, nullptr);
    if (r.ok()) ++got;
  }
  EXPECT_EQ(got, 3);
  EXPECT_EQ((*a)->Acquire(HeldWord(9, false), 100ms, nullptr).status().code(), Errc::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  const Counts d = t->Count();
  EXPECT_EQ(d.held_action, 3u);
  EXPECT_EQ(d.cooling, 0u);
  EXPECT_EQ(d.enabled, 3u);
}

TEST_F(CoolingTest, CooldownIsClampedToOneHour) {
  auto t = Make(4, 1, 0ns);
  t->SetReleaseCooldown(std::chrono::hours(5));
  EXPECT_EQ(t->release_cooldown_ns(), kMaxReleaseCooldownNs);
  t->SetReleaseCooldown(-5ns);
  EXPECT_EQ(t->release_cooldown_ns(), 0);
}

}  // namespace
}  // namespace dsb::shm
