// Issue 8: nothing the broker does, and no lease fence, waits on the waiter
// queue's mutex, which any client process can hold. Real processes on a real
// segment: a child takes the mutex and is SIGSTOPped (a DigiScope instance in a
// debugger), or four garbage bytes are written into the mutex word; this
// process plays the broker, other children are clients.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>

#include "shm/slot_table.h"
#include "tests/shm/segment_fixture.h"
#include "tests/support/segment_tamper.h"
#include "tests/support/wait.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;
using Ms = std::chrono::duration<double, std::milli>;
using testing::RawHeader;
using testing::StoppedHolder;

// A client process that calls Acquire(timeout) and reports the outcome and
// how long the call took through a pipe.
class WaitingClient {
 public:
  struct Outcome {
    int code = -1;  // 0: got a slot, else the Errc value
    double ms = 0;
  };
  WaitingClient(const std::string& segment, std::uint64_t word, std::chrono::milliseconds timeout) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      auto t = SlotTable::Attach(segment);
      Outcome o;
      if (t.ok()) {
        const auto start = std::chrono::steady_clock::now();
        auto r = (*t)->Acquire(word, timeout, nullptr);
        o.ms = Ms(std::chrono::steady_clock::now() - start).count();
        o.code = r.ok() ? 0 : static_cast<int>(r.status().code());
      }
      if (::write(fds[1], &o, sizeof o) != sizeof o) _exit(3);
      _exit(0);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~WaitingClient() {
    if (fd_ >= 0) ::close(fd_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Blocks until the child reports (it always does: its Acquire is bounded).
  Outcome Result() {
    Outcome o;
    if (::read(fd_, &o, sizeof o) != sizeof o) o.code = -2;
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return o;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

// Runs `f` on another thread; true if it returned within `bound`. A call
// stuck on the mutex would never return: the test then fails instead of
// hanging (the holder is let go by its destructor, which unsticks it).
template <typename F>
bool ReturnsWithin(F f, std::chrono::milliseconds bound, double* took_ms) {
  auto done = std::async(std::launch::async, [f, took_ms]() mutable {
    const auto start = std::chrono::steady_clock::now();
    f();
    *took_ms = Ms(std::chrono::steady_clock::now() - start).count();
  });
  return done.wait_for(bound) == std::future_status::ready;
}

class StalledQueueTest : public SegmentFixture {};

TEST_F(StalledQueueTest, BrokerSideCallsNeverWaitOnAStoppedMutexHolder) {
  auto t = Make(8, 2, {}, 8);
  ASSERT_TRUE(t);
  const std::uint32_t dead = t->AllocateOwner();
  const std::uint64_t dead_word = HeldWord(dead, false);
  ASSERT_NE(t->TryAcquireIndex(dead_word), SlotTable::kNoSlot);
  StoppedHolder holder(name_);
  ASSERT_TRUE(holder.ok()) << "the holder did not stop holding the queue mutex";
  double ms = 0;
  std::vector<std::uint32_t> quarantined;
  const bool returned = ReturnsWithin(
      [&] {
        t->SetLeaseFence(1, MonotonicNs() + 1'000'000'000);  // a lease fence
        t->SetCapacity(6);                                    // a grant
        quarantined = t->Reclaim(dead, true);                 // a client died
        for (std::uint32_t i : quarantined) t->EndQuarantine(i);
        t->SetCapacity(3);  // a shrink
        (void)t->QuarantineUnheld(1);
        (void)t->Pump();
        (void)t->CheckQueue();
        (void)t->Count();
      },
      10s, &ms);
  ASSERT_TRUE(returned) << "a broker-side call waited on the stopped holder's mutex";
  std::printf("broker-side calls with the queue mutex held by a stopped process: %.3f ms\n", ms);
  EXPECT_EQ(quarantined.size(), 1u);
  EXPECT_EQ(t->Count().capacity, 3u);
  EXPECT_EQ(t->Count().enabled, 3u);  // QuarantineUnheld took a free one
  EXPECT_EQ(t->CheckQueue().state, SlotTable::QueueHealth::kHeld);
}

TEST_F(StalledQueueTest, AWaitingClientGetsAFreedSlotOrTimesOutBoundedly) {
  auto t = Make(4, 1, {}, 8);
  ASSERT_TRUE(t);
  const std::uint64_t mine = HeldWord(t->AllocateOwner(), false);
  ASSERT_NE(t->TryAcquireIndex(mine), SlotTable::kNoSlot);  // the table is full
  // One client queued before the holder stopped, one arriving after.
  WaitingClient early(name_, HeldWord(t->AllocateOwner(), false), 20s);
  ASSERT_TRUE(dsb::testing::WaitUntil([&] { return t->Count().waiters == 1; }, 20s));
  StoppedHolder holder(name_);
  ASSERT_TRUE(holder.ok()) << "the holder did not stop holding the queue mutex";
  WaitingClient late(name_, HeldWord(t->AllocateOwner(), false), 20s);
  WaitingClient gives_up(name_, HeldWord(t->AllocateOwner(), false), 300ms);
  const WaitingClient::Outcome g = gives_up.Result();
  EXPECT_EQ(g.code, static_cast<int>(Errc::kTimeout));
  EXPECT_LT(g.ms, 3000) << "a 300 ms wait took " << g.ms << " ms";
  std::printf("300 ms wait with the mutex held by a stopped process: %.1f ms\n", g.ms);
  // The broker grants two more slots: both waiting clients get one.
  const auto grant = std::chrono::steady_clock::now();
  t->SetCapacity(3);
  const WaitingClient::Outcome a = early.Result();
  const WaitingClient::Outcome b = late.Result();
  const double after_grant = Ms(std::chrono::steady_clock::now() - grant).count();
  EXPECT_EQ(a.code, 0) << "the client queued before the stop";
  EXPECT_EQ(b.code, 0) << "the client that came after the stop";
  EXPECT_LT(after_grant, 10000);
  std::printf("both waiters served %.1f ms after the grant (queue wedged)\n", after_grant);
  EXPECT_EQ(t->Count().held_action, 3u);
  holder.Release();
  // The queue works again once the holder lets go.
  (void)t->Pump();
  EXPECT_EQ(t->Count().waiters, 0u);
}

// Four hostile bytes in the mutex's lock word, naming a thread that cannot
// exist: the broker keeps working, clients are delayed boundedly, and the
// broker's check re-initialises the mutex (the queue works again).
TEST_F(StalledQueueTest, GarbageInTheMutexWordWedgesNobodyAndIsRepaired) {
  auto t = Make(4, 1, {}, 8);
  ASSERT_TRUE(t);
  const std::uint64_t mine = HeldWord(t->AllocateOwner(), false);
  const std::uint32_t slot = t->TryAcquireIndex(mine);
  ASSERT_NE(slot, SlotTable::kNoSlot);
  {
    RawHeader raw(name_);
    const std::uint32_t garbage = 0x3FFFFFF0u;  // tid 1073741808 > any pid_max
    std::memcpy(&raw.h->queue_mutex, &garbage, sizeof garbage);
  }
  double ms = 0;
  ASSERT_TRUE(ReturnsWithin(
      [&] {
        t->SetCapacity(2);
        t->SetLeaseFence(0, 0);
        t->SetCapacity(1);
      },
      10s, &ms))
      << "the broker wedged on a garbage mutex word";
  WaitingClient gives_up(name_, HeldWord(t->AllocateOwner(), false), 200ms);
  const WaitingClient::Outcome g = gives_up.Result();
  EXPECT_EQ(g.code, static_cast<int>(Errc::kTimeout));
  EXPECT_LT(g.ms, 3000);
  WaitingClient waiter(name_, HeldWord(t->AllocateOwner(), false), 20s);
  t->SetCapacity(2);
  EXPECT_EQ(waiter.Result().code, 0);
  const SlotTable::QueueHealth health = t->CheckQueue();
  EXPECT_EQ(health.state, SlotTable::QueueHealth::kReinitialised) << health.detail;
  EXPECT_NE(health.detail.find(name_), std::string::npos) << health.detail;
  std::printf("%s\n", health.detail.c_str());
  // FIFO service again: a queued waiter is granted the released slot.
  WaitingClient queued(name_, HeldWord(t->AllocateOwner(), false), 20s);
  ASSERT_TRUE(dsb::testing::WaitUntil([&] { return t->Count().waiters == 1; }, 20s));
  t->Release(slot, mine);
  EXPECT_EQ(queued.Result().code, 0);
  EXPECT_EQ(t->CheckQueue().state, SlotTable::QueueHealth::kOk);
}

// Garbage that names a live thread cannot be told apart from a stopped
// holder: it is reported and left alone, and nothing wedges.
TEST_F(StalledQueueTest, GarbageNamingALiveThreadIsReportedAndLeftAlone) {
  auto t = Make(4, 1, {}, 8);
  ASSERT_TRUE(t);
  {
    RawHeader raw(name_);
    const auto live = static_cast<std::uint32_t>(::getpid());
    std::memcpy(&raw.h->queue_mutex, &live, sizeof live);
  }
  const SlotTable::QueueHealth health = t->CheckQueue();
  EXPECT_EQ(health.state, SlotTable::QueueHealth::kHeld) << health.detail;
  EXPECT_EQ(health.holder_tid, ::getpid());
  const std::uint64_t w = HeldWord(t->AllocateOwner(), false);
  EXPECT_NE(t->TryAcquireIndex(w), SlotTable::kNoSlot);  // the fast path is untouched
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(t->Acquire(w, 100ms, nullptr).status().code(), Errc::kTimeout);
  EXPECT_LT(Ms(std::chrono::steady_clock::now() - start).count(), 3000);
  // Put the word back so the fixture's segment can be removed cleanly.
  RawHeader raw(name_);
  const std::uint32_t zero = 0;
  std::memcpy(&raw.h->queue_mutex, &zero, sizeof zero);
}

}  // namespace
}  // namespace dsb::shm
