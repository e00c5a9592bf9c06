#include "shm/slot_table.h"

#include <gtest/gtest.h>
#ifndef _WIN32
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <barrier>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include "shm/futex.h"
#include "tests/shm/segment_fixture.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;
// Windows (issue 12): the tests that work on /dev/shm files, link or
// truncate them, or fork and SIGSTOP a child are POSIX-only (#ifndef _WIN32
// below); tests/shm/win_process_test.cc has the Windows forms with processes.
const auto UniqueName = SegmentTestName;

using SlotTableTest = SegmentFixture;

TEST_F(SlotTableTest, AttachSeesTheCreatorsTable) {
  auto t = Make(64, 32);
  auto a = SlotTable::Attach(name_);
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ((*a)->target(), "exch01");
  EXPECT_EQ((*a)->capacity(), 32u);
  EXPECT_EQ((*a)->instance_id(), t->instance_id());
  auto idx = (*a)->TryAcquire(HeldWord(7, false));
  ASSERT_TRUE(idx.has_value());
  EXPECT_EQ(t->Count().held_action, 1u);
}

#ifndef _WIN32
TEST_F(SlotTableTest, SegmentIsCreatedMode0660) {
  auto t = Make(8, 8);
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name_).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}
#endif

TEST_F(SlotTableTest, NeverGrantsMoreThanCapacity) {
  auto t = Make(64, 5);
  std::vector<std::uint32_t> got;
  for (int i = 0; i < 5; ++i) {
    auto idx = t->TryAcquire(HeldWord(1, false));
    ASSERT_TRUE(idx.has_value());
    got.push_back(*idx);
  }
  EXPECT_FALSE(t->TryAcquire(HeldWord(1, false)).has_value());
  t->Release(got[0], HeldWord(1, false));
  EXPECT_TRUE(t->TryAcquire(HeldWord(1, false)).has_value());
}

TEST_F(SlotTableTest, ShrinkRetiresHeldSlotsAndTheyLeaveOnRelease) {
  auto t = Make(16, 4);
  const auto w = HeldWord(3, false);
  std::vector<std::uint32_t> held;
  for (int i = 0; i < 4; ++i) held.push_back(*t->TryAcquire(w));
  const auto gen = t->revocation_generation();
  EXPECT_TRUE(t->SetCapacity(2));
  EXPECT_GT(t->revocation_generation(), gen);
  int yielding = 0;
  for (auto i : held) yielding += t->StillHeld(i, w) ? 0 : 1;
  EXPECT_EQ(yielding, 2);
  // Nothing is admitted until held < capacity (B2).
  for (auto i : held) {
    if (!t->StillHeld(i, w)) t->Release(i, w);
  }
  EXPECT_FALSE(t->TryAcquire(w).has_value());
  t->Release(held[0], w);  // still-held ones
  EXPECT_EQ(t->Count().enabled, 2u);
  EXPECT_TRUE(t->TryAcquire(w).has_value());
  EXPECT_FALSE(t->TryAcquire(w).has_value());
}

TEST_F(SlotTableTest, GrowUnretiresBeforeEnablingNewSlots) {
  auto t = Make(16, 2);
  const auto w = HeldWord(3, false);
  auto a = *t->TryAcquire(w);
  auto b = *t->TryAcquire(w);
  t->SetCapacity(1);
  EXPECT_FALSE(t->StillHeld(a, w) && t->StillHeld(b, w));
  t->SetCapacity(2);
  EXPECT_TRUE(t->StillHeld(a, w));
  EXPECT_TRUE(t->StillHeld(b, w));
  EXPECT_EQ(t->Count().enabled, 2u);
}

TEST_F(SlotTableTest, ReclaimFreesEveryDeadOwnerSlotAndQuarantines) {
  auto t = Make(16, 6);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(t->TryAcquire(HeldWord(5, false)));
  ASSERT_TRUE(t->TryAcquire(HeldWord(5, true)));
  ASSERT_TRUE(t->TryAcquire(HeldWord(6, false)));
  std::uint32_t freed = 0;
  auto q = t->Reclaim(5, /*quarantine=*/true, &freed);
  EXPECT_EQ(freed, 4u);
  EXPECT_EQ(q.size(), 4u);
  Counts c = t->Count();
  EXPECT_EQ(c.quarantined, 4u);
  EXPECT_EQ(c.free, 1u);
  EXPECT_EQ(c.held_action, 1u);
  for (auto i : q) t->EndQuarantine(i);
  EXPECT_EQ(t->Count().free, 5u);
}

TEST_F(SlotTableTest, QuarantineEndingAboveCapacityDisablesTheSlot) {
  auto t = Make(16, 4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(t->TryAcquire(HeldWord(5, false)));
  auto q = t->Reclaim(5, true);
  t->SetCapacity(2);
  EXPECT_EQ(t->Count().quarantined, 4u);  // shrink leaves quarantined slots alone
  for (auto i : q) t->EndQuarantine(i);
  EXPECT_EQ(t->Count().enabled, 2u);
  EXPECT_EQ(t->Count().free, 2u);
}

TEST_F(SlotTableTest, QuarantineUnheldTakesFreeSlotsFirstAndCanGoOverCapacity) {
  auto t = Make(16, 4);
  ASSERT_TRUE(t->TryAcquire(HeldWord(5, false)));
  auto q = t->QuarantineUnheld(6);  // 3 free, then 3 disabled
  EXPECT_EQ(q.size(), 6u);
  Counts c = t->Count();
  EXPECT_EQ(c.quarantined, 6u);
  EXPECT_EQ(c.free, 0u);
  EXPECT_EQ(c.held_action, 1u);
  EXPECT_FALSE(t->TryAcquire(HeldWord(6, false)));
  for (auto i : q) t->EndQuarantine(i);
  EXPECT_EQ(t->Count().enabled, 4u);  // back to capacity: the extra ones are disabled
  EXPECT_EQ(t->Count().free, 3u);
}

TEST_F(SlotTableTest, QuarantineRecordOnlyGrowsAndIsSeenByAttachers) {
  auto t = Make(16, 4);
  EXPECT_EQ(t->quarantine_record_ns(), 0);
  t->RaiseQuarantineRecord(1000);
  t->RaiseQuarantineRecord(500);
  EXPECT_EQ(t->quarantine_record_ns(), 1000);
  auto other = SlotTable::Attach(name_);
  ASSERT_TRUE(other.ok()) << other.status().message();
  (*other)->RaiseQuarantineRecord(2000);
  EXPECT_EQ(t->quarantine_record_ns(), 2000);
}

TEST_F(SlotTableTest, WaitTimesOutWithTimeoutError) {
  auto t = Make(4, 1);
  ASSERT_TRUE(t->TryAcquire(HeldWord(1, false)));
  auto r = t->Acquire(HeldWord(2, false), 20ms, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kTimeout);
  EXPECT_EQ(t->Count().waiters, 0u);
}

TEST_F(SlotTableTest, ZeroTimeoutDoesNotWait) {
  auto t = Make(4, 1);
  ASSERT_TRUE(t->TryAcquire(HeldWord(1, false)));
  auto r = t->Acquire(HeldWord(2, false), 0ms, nullptr);
  EXPECT_EQ(r.status().code(), Errc::kCapacityExhausted);
}

class FlagInterrupt : public WaitInterrupt {
 public:
  bool Arm(std::atomic<std::uint32_t>* w) override {
    std::lock_guard l(mu_);
    word_ = w;
    return !flag_;
  }
  void Disarm(std::atomic<std::uint32_t>*) override {
    std::lock_guard l(mu_);
    word_ = nullptr;
  }
  bool interrupted() const override { return flag_.load(); }
  bool armed() {
    std::lock_guard l(mu_);
    return word_ != nullptr;
  }
  void Fire() {
    std::lock_guard l(mu_);
    flag_ = true;
    if (word_ != nullptr) {
      word_->store(1);
      FutexWake(word_, 1);
    }
  }

 private:
  std::mutex mu_;
  std::atomic<std::uint32_t>* word_ = nullptr;
  std::atomic<bool> flag_{false};
};

TEST_F(SlotTableTest, InterruptCancelsAWaiter) {
  auto t = Make(4, 1);
  ASSERT_TRUE(t->TryAcquire(HeldWord(1, false)));
  FlagInterrupt intr;
  Status result;
  std::thread waiter([&] { result = t->Acquire(HeldWord(2, false), -1ns, &intr).status(); });
  while (!intr.armed()) std::this_thread::yield();
  intr.Fire();
  waiter.join();
  EXPECT_EQ(result.code(), Errc::kCancelled);
  EXPECT_EQ(t->Count().waiters, 0u);
}

TEST_F(SlotTableTest, WaitersAreServedInArrivalOrder) {
  auto t = Make(4, 1);
  const auto holder = HeldWord(1, false);
  std::uint32_t slot = *t->TryAcquire(holder);
  constexpr int kWaiters = 6;
  std::vector<int> order;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      const auto w = HeldWord(static_cast<std::uint32_t>(10 + i), false);
      auto r = t->Acquire(w, -1ns, nullptr);
      ASSERT_TRUE(r.ok());
      {
        std::lock_guard l(mu);
        order.push_back(i);
      }
      t->Release(*r, w);
    });
    // Queue them one by one so arrival order is known.
    while (t->Count().waiters != static_cast<std::uint32_t>(i + 1)) std::this_thread::yield();
  }
  t->Release(slot, holder);
  for (auto& th : threads) th.join();
  std::vector<int> expected(kWaiters);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(order, expected);
}

TEST_F(SlotTableTest, NewcomersDoNotOvertakeQueuedWaiters) {
  auto t = Make(4, 1);
  const auto holder = HeldWord(1, false);
  std::uint32_t slot = *t->TryAcquire(holder);
  std::thread waiter([&] {
    auto r = t->Acquire(HeldWord(2, false), -1ns, nullptr);
    ASSERT_TRUE(r.ok());
  });
  while (t->Count().waiters != 1) std::this_thread::yield();
  t->Release(slot, holder);
  waiter.join();
  // The slot went to the waiter, not to a TryAcquire racing it.
  EXPECT_FALSE(t->TryAcquire(HeldWord(3, false)).has_value());
  EXPECT_EQ(t->HoldingsByOwner().count(2), 1u);
}

TEST_F(SlotTableTest, ConcurrentThreadsNeverExceedCapacity) {
  constexpr std::uint32_t kCap = 3;
  auto t = Make(8, kCap);
  std::atomic<int> inside{0};
  std::atomic<int> peak{0};
  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      const auto w = HeldWord(100 + i, false);
      for (int n = 0; n < 3000; ++n) {
        auto r = t->Acquire(w, -1ns, nullptr);
        ASSERT_TRUE(r.ok());
        int now = inside.fetch_add(1) + 1;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        inside.fetch_sub(1);
        t->Release(*r, w);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(peak.load(), static_cast<int>(kCap));
  EXPECT_EQ(t->Count().free, kCap);
  EXPECT_EQ(t->Count().waiters, 0u);
}

// ---- validation on attach ----

class CorruptSegmentTest : public SegmentFixture {
 protected:
  // Writes through a second mapping, as another process could.
  void Patch(std::size_t offset, const void* bytes, std::size_t n) {
    SegmentView view(name_);
    ASSERT_TRUE(view.ok());
    ASSERT_LE(offset + n, view.size());
    std::memcpy(view.data() + offset, bytes, n);
  }
};

TEST_F(CorruptSegmentTest, MissingSegmentIsUnavailable) {
  auto a = SlotTable::Attach(UniqueName("dsb-nope"));
  EXPECT_EQ(a.status().code(), Errc::kSegmentUnavailable);
  EXPECT_NE(a.status().message().find("does not exist"), std::string::npos);
}

#ifndef _WIN32
TEST_F(CorruptSegmentTest, AHardLinkedSegmentIsRefusedUnderEitherNameWhenTheOwnerIsChecked) {
  // A group member may hard-link a segment (0660) under another broker's
  // segment name: that broker would adopt, audit and hand out this table.
  auto t = Make(8, 8);
  const std::string other = UniqueName("dsb-linked");
  ASSERT_EQ(::link(("/dev/shm/" + name_).c_str(), ("/dev/shm/" + other).c_str()), 0);
  for (const std::string& n : {other, name_}) {
    auto a = SlotTable::Attach(n, AttachOptions{::geteuid()});
    ASSERT_FALSE(a.ok()) << n;
    EXPECT_EQ(a.status().code(), Errc::kSegmentInvalid);
    EXPECT_NE(a.status().message().find("has 2 names"), std::string::npos)
        << a.status().message();
  }
  ::unlink(("/dev/shm/" + other).c_str());
  EXPECT_TRUE(SlotTable::Attach(name_, AttachOptions{::geteuid()}).ok());
}
#endif

TEST_F(CorruptSegmentTest, WrongMagicIsRefusedNamingTheSegment) {
  auto t = Make(8, 8);
  const std::uint64_t bad = 0x4141414141414141ULL;
  Patch(offsetof(SegmentHeader, magic), &bad, sizeof bad);
  auto a = SlotTable::Attach(name_);
  EXPECT_EQ(a.status().code(), Errc::kSegmentInvalid);
  EXPECT_NE(a.status().message().find(name_), std::string::npos);
  EXPECT_NE(a.status().message().find("magic"), std::string::npos);
}

TEST_F(CorruptSegmentTest, WrongVersionIsRefused) {
  auto t = Make(8, 8);
  const std::uint32_t v = kLayoutVersion + 1;
  Patch(offsetof(SegmentHeader, layout_version), &v, sizeof v);
  auto a = SlotTable::Attach(name_);
  EXPECT_EQ(a.status().code(), Errc::kSegmentInvalid);
  EXPECT_NE(a.status().message().find("version"), std::string::npos);
}

TEST_F(CorruptSegmentTest, ChecksumMismatchIsRefused) {
  auto t = Make(8, 8);
  const char x = 'X';
  Patch(offsetof(SegmentHeader, target), &x, 1);
  auto a = SlotTable::Attach(name_);
  EXPECT_EQ(a.status().code(), Errc::kSegmentInvalid);
  EXPECT_NE(a.status().message().find("checksum"), std::string::npos);
}

#ifndef _WIN32
TEST_F(CorruptSegmentTest, TruncatedSegmentIsRefused) {
  auto t = Make(8, 8);
  ASSERT_EQ(::truncate(("/dev/shm/" + name_).c_str(), 4096), 0);
  auto a = SlotTable::Attach(name_);
  EXPECT_EQ(a.status().code(), Errc::kSegmentInvalid);
}

TEST_F(CorruptSegmentTest, ForeignFileIsRefused) {
  name_ = UniqueName("dsb-foreign");
  {
    std::ofstream f("/dev/shm/" + name_, std::ios::binary);
    std::mt19937 rng(42);
    for (int i = 0; i < 100000; ++i) f.put(static_cast<char>(rng()));
  }
  auto a = SlotTable::Attach(name_);
  EXPECT_EQ(a.status().code(), Errc::kSegmentInvalid);
  std::ofstream(("/dev/shm/" + name_), std::ios::trunc).put('x');
  auto b = SlotTable::Attach(name_);
  EXPECT_EQ(b.status().code(), Errc::kSegmentInvalid);
  EXPECT_NE(b.status().message().find("smaller than"), std::string::npos);
}
#endif

TEST_F(SlotTableTest, CreateRefusesAnExistingSegment) {
  auto t = Make(8, 8);
  CreateOptions o;
  o.name = name_;
  o.target = "exch01";
  auto again = SlotTable::Create(o);
  EXPECT_EQ(again.status().code(), Errc::kSegmentUnavailable);
  EXPECT_NE(again.status().message().find("already exists"), std::string::npos);
}

}  // namespace
}  // namespace dsb::shm

namespace dsb::shm {
namespace {

// Regression: a served waiter that has not run yet keeps its queue entry in
// kWaitGranted; when the ring wraps onto it, a newcomer must skip that place
// instead of failing with kTooManyWaiters while the queue is nearly empty.
#ifndef _WIN32
TEST(SlotTableQueue, WrapOntoAServedButSleepingWaiterIsNotQueueFull) {
  const std::string name = UniqueName("dsb-wrap");
  CreateOptions o;
  o.name = name;
  o.target = "t";
  o.slot_count = 4;
  o.waiter_capacity = 2;
  o.capacity = 1;
  auto created = SlotTable::Create(o);
  ASSERT_TRUE(created.ok());
  SlotTable& t = **created;
  const auto holder = HeldWord(1, false);
  const std::uint32_t slot = *t.TryAcquire(holder);
  const pid_t child = ::fork();
  if (child == 0) {
    auto a = SlotTable::Attach(name);
    auto r = (*a)->Acquire(HeldWord(2, false), std::chrono::seconds(30), nullptr);
    _exit(r.ok() ? 0 : 1);
  }
  while (t.Count().waiters != 1) std::this_thread::yield();
  ::kill(child, SIGSTOP);            // served below, but cannot run to pick it up
  t.Release(slot, holder);           // the child's entry becomes kWaitGranted
  ASSERT_EQ(t.Count().waiters, 0u);
  auto first = t.Acquire(HeldWord(3, false), std::chrono::milliseconds(5), nullptr);
  EXPECT_EQ(first.status().code(), Errc::kTimeout);
  auto second = t.Acquire(HeldWord(4, false), std::chrono::milliseconds(5), nullptr);
  EXPECT_EQ(second.status().code(), Errc::kTimeout) << second.status().message();
  ::kill(child, SIGCONT);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  (void)SlotTable::Remove(name);
}
#endif

}  // namespace
}  // namespace dsb::shm
