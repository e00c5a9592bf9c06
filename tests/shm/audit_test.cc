// The broker's segment audit and its owner ids (issue 9): every client
// process maps the segment read-write, so a group member can write any word.
// These tests write bad words straight into a segment (as such a process
// would, through its own mapping) and check what SlotTable::Audit repairs,
// that it leaves a legal table alone (also while clients take and release
// slots), and that owner ids come from the broker's memory, not the segment.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "shm/segment_layout.h"
#include "shm/slot_table.h"
#include "tests/shm/segment_fixture.h"
#include "tests/support/segment_tamper.h"
#include "tests/support/unique_name.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;
using testing::RawSegment;

// What the broker knows: registered owners, its own quarantined slots.
SlotTable::AuditPolicy Policy(const std::set<std::uint32_t>* known,
                              std::vector<std::uint32_t> quarantined = {},
                              bool quarantine = true,
                              std::chrono::nanoseconds cooldown = 0ns) {
  SlotTable::AuditPolicy p;
  p.now_ns = MonotonicNs();
  p.known_owner = [known](std::uint32_t o) { return known != nullptr && known->count(o) > 0; };
  std::sort(quarantined.begin(), quarantined.end());
  p.quarantined = std::move(quarantined);
  p.quarantine = quarantine;
  p.cooling_horizon_ns = p.now_ns + cooldown.count();
  return p;
}

class Audit : public SegmentFixture {};

TEST_F(Audit, LeavesALegalTableAlone) {
  auto t = Make(16, 8, 50ms);
  ASSERT_TRUE(t);
  std::set<std::uint32_t> known;
  const std::uint32_t a = t->AllocateOwner();
  const std::uint32_t b = t->AllocateOwner();
  known = {a, b};
  // Held (action and system), cooling, retiring, quarantined over capacity.
  const auto s1 = t->TryAcquire(HeldWord(a, false));
  const auto s2 = t->TryAcquire(HeldWord(b, true));
  const auto s3 = t->TryAcquire(HeldWord(b, false));
  ASSERT_TRUE(s1 && s2 && s3);
  t->Release(*s3, HeldWord(b, false));  // cooling
  std::vector<std::uint32_t> q = t->QuarantineUnheld(3);  // disabled ones too
  t->SetCapacity(1);  // retires held ones
  const auto f = t->Audit(Policy(&known, q, true, 50ms));
  EXPECT_FALSE(f.any()) << "excess " << f.excess_enabled << " lost " << f.lost_capacity
                        << " forged " << f.forged_owners << " stray " << f.stray_quarantine
                        << " header " << f.header_fields;
  EXPECT_TRUE(t->StillHeld(*s1, HeldWord(a, false)) || t->HeldBy(*s1, HeldWord(a, false)));
}

TEST_F(Audit, FindsNothingWhileClientsTakeAndReleaseSlots) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  std::set<std::uint32_t> known;
  std::vector<std::uint32_t> owners;
  for (int i = 0; i < 3; ++i) owners.push_back(t->AllocateOwner());
  known.insert(owners.begin(), owners.end());
  auto client = SlotTable::Attach(name_);
  ASSERT_TRUE(client.ok());
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (const std::uint32_t o : owners) {
    threads.emplace_back([&, o] {
      const std::uint64_t w = HeldWord(o, false);
      // Bounded in count and time.
      const auto until = std::chrono::steady_clock::now() + 5s;
      for (int n = 0; n < 2'000'000 && !stop.load() && std::chrono::steady_clock::now() < until;
           ++n) {
        auto idx = (*client)->Acquire(w, 5ms, nullptr);
        if (idx.ok()) (*client)->Release(*idx, w);
      }
    });
  }
  SlotTable::AuditFindings total;
  for (int i = 0; i < 200; ++i) {
    const auto f = t->Audit(Policy(&known));
    total.excess_enabled += f.excess_enabled;
    total.lost_capacity += f.lost_capacity;
    total.forged_owners += f.forged_owners;
    total.invalid_words += f.invalid_words;
    total.header_fields += f.header_fields;
    total.queue_repairs += f.queue_repairs;
    total.forged_waiters += f.forged_waiters;
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_FALSE(total.any()) << "excess " << total.excess_enabled << " lost "
                            << total.lost_capacity << " forged " << total.forged_owners
                            << " header " << total.header_fields << " queue "
                            << total.queue_repairs << " waiters " << total.forged_waiters;
  EXPECT_EQ(t->Count().enabled, 4u);
}

TEST_F(Audit, DisablesFreeWordsWrittenOverDisabledOnes) {
  auto t = Make(8, 2);
  ASSERT_TRUE(t);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  for (std::uint32_t i = 4; i < 8; ++i) raw.word(i).store(kFree);
  raw.header().scan_bound.store(8);
  ASSERT_EQ(t->Count().free, 6u);
  const auto f = t->Audit(Policy(nullptr));
  EXPECT_EQ(f.excess_enabled, 4u);
  EXPECT_EQ(t->Count().enabled, 2u);
  EXPECT_EQ(t->Count().free, 2u);
}

TEST_F(Audit, AsksBackHeldSlotsTakenAboveCapacity) {
  auto t = Make(8, 2);
  ASSERT_TRUE(t);
  std::set<std::uint32_t> known{t->AllocateOwner()};
  const std::uint64_t w = HeldWord(*known.begin(), false);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  // The hostile member enabled 4 more slots and its threads took all 6.
  for (std::uint32_t i = 2; i < 6; ++i) raw.word(i).store(kFree);
  raw.header().scan_bound.store(6);
  std::vector<std::uint32_t> taken;
  for (int i = 0; i < 6; ++i) {
    auto s = t->TryAcquire(w);
    ASSERT_TRUE(s);
    taken.push_back(*s);
  }
  const std::uint64_t gen = t->revocation_generation();
  const auto f = t->Audit(Policy(&known));
  EXPECT_EQ(f.excess_enabled, 4u);
  EXPECT_GT(t->revocation_generation(), gen) << "the holders are told to yield";
  EXPECT_EQ(t->Count().retiring, 4u);
  // Released, the retired ones leave the table: capacity is 2 again.
  for (const std::uint32_t s : taken) t->Release(s, w);
  EXPECT_EQ(t->Count().enabled, 2u);
}

TEST_F(Audit, EnablesCapacityWrittenOverWithDisabled) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  for (std::uint32_t i = 0; i < 8; ++i) raw.word(i).store(kDisabled);
  ASSERT_EQ(t->Count().enabled, 0u);
  const auto f = t->Audit(Policy(nullptr));
  EXPECT_EQ(f.lost_capacity, 4u);
  EXPECT_EQ(t->Count().free, 4u);
}

TEST_F(Audit, ReclaimsSlotsOfForgedOwnersIntoQuarantine) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  const std::uint32_t live = t->AllocateOwner();
  const std::uint32_t gone = t->AllocateOwner();  // handed out, not registered now
  std::set<std::uint32_t> known{live};
  const auto mine = t->TryAcquire(HeldWord(live, false));
  ASSERT_TRUE(mine);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  // A free slot taken by a word naming an id never handed out, one naming
  // an owner that is not registered, and one with owner 0.
  std::vector<std::uint32_t> forged_slots;
  for (std::uint32_t i = 0; i < 4 && forged_slots.size() < 3; ++i) {
    if (i == *mine) continue;
    forged_slots.push_back(i);
  }
  raw.word(forged_slots[0]).store(HeldWord(999, false));
  raw.word(forged_slots[1]).store(HeldWord(gone, true) | kRetireBit);
  raw.word(forged_slots[2]).store(HeldWord(0, false));
  const auto f = t->Audit(Policy(&known));
  EXPECT_EQ(f.forged_owners, 3u);
  EXPECT_EQ(f.quarantined.size(), 3u);
  for (const std::uint32_t s : forged_slots) {
    EXPECT_EQ(raw.word(s).load(), kQuarantined) << "slot " << s;
  }
  EXPECT_TRUE(t->StillHeld(*mine, HeldWord(live, false))) << "a registered owner keeps its slot";
  // Without quarantine the slots are free at once.
  raw.word(forged_slots[0]).store(kFree);
  raw.word(forged_slots[0]).store(HeldWord(1234, false));
  const auto g = t->Audit(Policy(&known, f.quarantined, false));
  EXPECT_EQ(g.forged_owners, 1u);
  EXPECT_TRUE(g.quarantined.empty());
}

TEST_F(Audit, GivesQuarantinedWordsItDidNotMakeAnEnd) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  raw.word(1).store(kQuarantined);
  const auto f = t->Audit(Policy(nullptr));
  EXPECT_EQ(f.stray_quarantine, 1u);
  ASSERT_EQ(f.quarantined, std::vector<std::uint32_t>{1});
  // Once the broker has it in its quarantine, it is no finding.
  EXPECT_FALSE(t->Audit(Policy(nullptr, {1})).any());
  t->EndQuarantine(1);
  EXPECT_EQ(t->Count().free, 4u);
}

TEST_F(Audit, PutsItsOwnQuarantineWrittenFreeBack) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  const std::uint32_t o = t->AllocateOwner();
  const auto s = t->TryAcquire(HeldWord(o, false));
  ASSERT_TRUE(s);
  const std::vector<std::uint32_t> q = t->Reclaim(o, true);
  ASSERT_EQ(q.size(), 1u);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  raw.word(q[0]).store(kFree);
  const auto f = t->Audit(Policy(nullptr, q));
  EXPECT_EQ(f.quarantine_cleared, 1u);
  EXPECT_EQ(raw.word(q[0]).load(), kQuarantined);
}

TEST_F(Audit, ClampsCoolingStampsBeyondTheCooldown) {
  auto t = Make(4, 4, 100ms);
  ASSERT_TRUE(t);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  const std::int64_t now = MonotonicNs();
  raw.word(0).store(CoolingWord(now + 1'800'000'000'000LL, false));  // 30 min: pins the slot
  raw.word(1).store(CoolingWord(now + 50'000'000LL, false));         // within the cooldown
  const auto p = Policy(nullptr, {}, true, 100ms);
  const auto f = t->Audit(p);
  EXPECT_EQ(f.future_cooling, 1u);
  EXPECT_LE(CoolingDeadline(raw.word(0).load()), p.cooling_horizon_ns);
  EXPECT_TRUE(IsCooling(raw.word(0).load()));
  EXPECT_EQ(CoolingDeadline(raw.word(1).load()), now + 50'000'000LL);
}

TEST_F(Audit, RaisesTheQuarantineRecordOnlyBeforeItQuarantines) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  auto p = Policy(nullptr);
  p.quarantine_end_ns = MonotonicNs() + 60'000'000'000LL;
  EXPECT_FALSE(t->Audit(p).any());
  EXPECT_EQ(t->quarantine_record_ns(), 0) << "nothing quarantined, nothing recorded";
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  raw.word(3).store(5);  // invalid
  EXPECT_EQ(t->Audit(p).invalid_words, 1u);
  EXPECT_EQ(t->quarantine_record_ns(), p.quarantine_end_ns);
  // Lowered by a client (a restarted broker would end quarantines early): restored.
  raw.header().quarantine_until_ns.store(1);
  EXPECT_EQ(t->Audit(p).header_fields, 1u);
  EXPECT_EQ(t->quarantine_record_ns(), p.quarantine_end_ns);
}

TEST_F(Audit, QuarantinesWordsThatAreNoValidState) {
  auto t = Make(8, 4);
  ASSERT_TRUE(t);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  raw.word(0).store(7);
  raw.word(1).store(kFree | kGrantBit);
  raw.word(2).store(kRetireBit | 3);
  const auto f = t->Audit(Policy(nullptr));
  EXPECT_EQ(f.invalid_words, 3u);
  EXPECT_EQ(f.quarantined.size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) EXPECT_EQ(raw.word(i).load(), kQuarantined);
}

TEST_F(Audit, RestoresHeaderFieldsOnlyTheBrokerWrites) {
  auto t = Make(8, 4, 10ms);
  ASSERT_TRUE(t);
  t->SetLeaseFence(0, 0);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  SegmentHeader& h = raw.header();
  h.capacity.store(8);
  h.scan_bound.store(0);  // nobody would find a slot
  h.release_cooldown_ns.store(kMaxReleaseCooldownNs);
  h.lease_deadline_ns.store(1);  // lease region closed for everyone
  h.floor.store(0);
  ASSERT_FALSE(t->TryAcquire(HeldWord(t->AllocateOwner(), false)));
  const auto f = t->Audit(Policy(nullptr));
  EXPECT_GE(f.header_fields, 4u);
  EXPECT_EQ(h.capacity.load(), 4u);
  EXPECT_GE(h.scan_bound.load(), 4u);
  EXPECT_EQ(h.release_cooldown_ns.load(), 10'000'000);
  EXPECT_EQ(h.lease_deadline_ns.load(), 0);
  EXPECT_TRUE(t->TryAcquire(HeldWord(t->AllocateOwner(), false)));
}

TEST_F(Audit, CancelsForgedWaitersAndRepairsAnImpossibleWaiterCount) {
  auto t = Make(8, 0, 0ns, 16);
  ASSERT_TRUE(t);
  RawSegment raw(name_);
  ASSERT_TRUE(raw.ok());
  SegmentHeader& h = raw.header();
  // An entry in the queue for an owner nobody registered.
  WaitEntry& e = raw.entry(0);
  e.held_word = HeldWord(4242, false);
  e.ticket = h.queue_tail;
  h.queue_tail = h.queue_tail + 1;
  e.state.store(kWaitWaiting);
  h.waiters.store(1);
  auto f = t->Audit(Policy(nullptr));
  EXPECT_EQ(f.forged_waiters, 1u);
  EXPECT_EQ(e.state.load(), static_cast<std::uint32_t>(kWaitCancelled));
  EXPECT_EQ(h.waiters.load(), 0u);
  // A waiter count nobody queued for: every client would take the slow path.
  h.waiters.store(500);
  f = t->Audit(Policy(nullptr));
  EXPECT_EQ(f.queue_repairs, 1u);
  EXPECT_EQ(h.waiters.load(), 0u);
}

TEST(OwnerIds, ARewoundCounterNeverMakesTheBrokerHandOutAnIdTwice) {
  const std::string name = dsb::testing::UniqueName("dsb-test");
  CreateOptions o;
  o.name = name;
  o.target = "exch01";
  o.slot_count = 8;
  o.capacity = 4;
  o.waiter_capacity = 16;
  auto t = SlotTable::Create(o);
  ASSERT_TRUE(t.ok()) << t.status().message();
  RawSegment raw(name);
  ASSERT_TRUE(raw.ok());
  std::set<std::uint32_t> handed;
  for (int i = 0; i < 5; ++i) handed.insert((*t)->AllocateOwner());
  raw.header().next_owner.store(0);  // rewound by a client
  for (int i = 0; i < 5; ++i) {
    const std::uint32_t id = (*t)->AllocateOwner();
    EXPECT_TRUE(handed.insert(id).second) << "owner id " << id << " handed out twice";
  }
  // A raised record is put back too (it would exhaust the ids).
  raw.header().next_owner.store(0xFFFFFFF0u);
  const std::uint32_t next = (*t)->AllocateOwner();
  EXPECT_TRUE(handed.insert(next).second);
  EXPECT_LT(next, 100u);
  EXPECT_EQ(raw.header().next_owner.load(), next);

  // A broker that adopts the segment after the record was rewound again
  // seeds its counter from every id in use: held words and waiter entries.
  raw.word(0).store(HeldWord(40, false));
  raw.entry(3).held_word = HeldWord(77, false);
  raw.entry(3).state.store(kWaitCancelled);
  raw.header().next_owner.store(1);
  auto adopted = SlotTable::Attach(name);
  ASSERT_TRUE(adopted.ok()) << adopted.status().message();
  EXPECT_EQ((*adopted)->SeedOwners(), 77u);
  EXPECT_EQ((*adopted)->AllocateOwner(), 78u);
  // With the adoption gap: ids above every id in use up to the gap are
  // skipped (an idle client of the earlier broker, its id in no word, may
  // hold one of them); the record says so at once, so the audit finds nothing.
  auto gapped = SlotTable::Attach(name);
  ASSERT_TRUE(gapped.ok());
  raw.header().next_owner.store(1);
  EXPECT_EQ((*gapped)->SeedOwners(SlotTable::kAdoptionOwnerGap), 77u);
  EXPECT_EQ(raw.header().next_owner.load(), 77u + SlotTable::kAdoptionOwnerGap);
  EXPECT_EQ((*gapped)->AllocateOwner(), 78u + SlotTable::kAdoptionOwnerGap);
  std::set<std::uint32_t> none;
  EXPECT_EQ((*gapped)->Audit(Policy(&none)).header_fields, 0u);
  (void)SlotTable::Remove(name);
}

// ENOSPC in /dev/shm: a tiny tmpfs mounted over /dev/shm in a private mount
// namespace of a child process (needs CAP_SYS_ADMIN; skipped otherwise).
// Creating a segment larger than the space is a clean error that names the
// cause and leaves nothing behind (it left a 0-byte segment that blocked
// every later start); a smaller one then fits.
TEST(CreateSegment, NoSpaceInDevShmIsACleanErrorAndLeavesNoSegment) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto say = [&](const std::string& text, int code) {
      (void)!::write(fds[1], text.data(), text.size());
      _exit(code);
    };
    if (::unshare(CLONE_NEWNS) != 0) say(std::string("unshare: ") + std::strerror(errno), 77);
    if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      say(std::string("make / private: ") + std::strerror(errno), 77);
    }
    if (::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=64k") != 0) {
      say(std::string("mount tmpfs: ") + std::strerror(errno), 77);
    }
    CreateOptions o;
    o.name = "dsb-test-enospc";
    o.target = "exch01";
    o.slot_count = 1024;  // 1024 * 64 B of slots + 1024 waiter entries: > 64 KiB
    o.capacity = 4;
    auto big = SlotTable::Create(o);
    if (big.ok()) say("a segment larger than /dev/shm was created", 1);
    const std::string msg = big.status().message();
    if (msg.find("No space left") == std::string::npos || msg.find("removed") == std::string::npos) {
      say("unexpected message: " + msg, 1);
    }
    if (SlotTable::Exists(o.name)) say("the half-made segment is still there: " + msg, 1);
    o.slot_count = 8;
    o.waiter_capacity = 8;
    auto small = SlotTable::Create(o);
    if (!small.ok()) say("a small segment after the failure: " + small.status().message(), 1);
    say(msg, 0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot mount a small /dev/shm here: " << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  std::printf("refusal: %s\n", out.c_str());
}

}  // namespace
}  // namespace dsb::shm
