// Multi-process kill -9 torture of the slot table.
//
// Child processes (each a few threads) take and give back slots in a loop
// while the parent SIGKILLs random children at random moments and, acting as
// the broker, reclaims the dead owner's slots. An independent occupancy table
// (shared anonymous memory, one cell per slot) is the judge: a child marks the
// cell with its pid right after taking a slot and clears it right before
// giving it back, so a cell already marked means two live holders of one slot.
// After quiesce every slot must be free again.
//
// DSB_TORTURE_SECONDS (default 3) sets the length; the seed is printed and can
// be replayed with DSB_TORTURE_SEED.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "shm/slot_table.h"
#include "tests/support/unique_name.h"

namespace dsb::shm {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kSlots = 64;

struct Shared {
  std::atomic<pid_t> occupant[kSlots];
  std::atomic<std::uint64_t> progress[64];  // per child index: steps done
  std::atomic<int> violations;
  std::atomic<int> out_of_range;
  std::atomic<std::uint64_t> acquisitions;
  std::atomic<bool> stop;
};

std::uint64_t EnvOr(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

[[noreturn]] void ChildMain(const std::string& segment, Shared* sh, int child, std::uint32_t owner,
                            std::uint32_t capacity, int threads) {
  auto t = SlotTable::Attach(segment);
  if (!t.ok()) _exit(3);
  SlotTable& table = **t;
  const pid_t me = ::getpid();
  std::vector<std::thread> ts;
  for (int k = 0; k < threads; ++k) {
    ts.emplace_back([&, k] {
      const std::uint64_t w = HeldWord(owner, false);
      std::mt19937 rng(static_cast<unsigned>(me * 31 + k));
      while (!sh->stop.load()) {
        auto r = table.Acquire(w, 20ms, nullptr);
        sh->progress[child].fetch_add(1);
        if (!r.ok()) continue;
        const std::uint32_t idx = *r;
        if (idx >= capacity) sh->out_of_range.fetch_add(1);
        pid_t expected = 0;
        if (!sh->occupant[idx].compare_exchange_strong(expected, me)) sh->violations.fetch_add(1);
        sh->acquisitions.fetch_add(1);
        for (auto spin = rng() % 2000; spin > 0; --spin) sh->progress[child].fetch_add(0);
        sh->progress[child].fetch_add(1);
        pid_t mine = me;
        sh->occupant[idx].compare_exchange_strong(mine, 0);
        table.Release(idx, w);
        sh->progress[child].fetch_add(1);
      }
    });
  }
  for (auto& th : ts) th.join();
  _exit(0);
}

class KillTorture : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(KillTorture, NoOvershootNoLeakUnderRandomSigkill) {
  const std::uint32_t capacity = GetParam();
  const std::uint64_t seed = EnvOr("DSB_TORTURE_SEED", std::random_device{}());
  const auto seconds = std::chrono::seconds(EnvOr("DSB_TORTURE_SECONDS", 3));
  std::printf("kill torture: capacity %u seed %llu (replay with DSB_TORTURE_SEED)\n", capacity,
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);

  const std::string name = dsb::testing::UniqueName("dsb-torture");
  CreateOptions o;
  o.name = name;
  o.target = "torture";
  o.slot_count = kSlots;
  o.capacity = capacity;
  auto created = SlotTable::Create(o);
  ASSERT_TRUE(created.ok()) << created.status().message();
  SlotTable& table = **created;

  void* mem = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* sh = new (mem) Shared{};

  constexpr int kChildren = 6;
  constexpr int kThreads = 3;
  struct Child {
    pid_t pid;
    std::uint32_t owner;
  };
  std::vector<Child> children(kChildren);
  auto spawn = [&](int i) {
    const std::uint32_t owner = table.AllocateOwner();
    const pid_t pid = ::fork();
    if (pid == 0) ChildMain(name, sh, i, owner, capacity, kThreads);
    children[static_cast<std::size_t>(i)] = {pid, owner};
  };
  for (int i = 0; i < kChildren; ++i) spawn(i);

  int kills = 0;
  std::uint32_t reclaimed = 0;
  const auto end = std::chrono::steady_clock::now() + seconds;
  while (std::chrono::steady_clock::now() < end) {
    const int victim = static_cast<int>(rng() % kChildren);
    // Wait for the victim to make a random amount of progress, then kill it:
    // the kill lands at an arbitrary instruction of its loop.
    const std::uint64_t target = sh->progress[victim].load() + 1 + rng() % 64;
    while (sh->progress[victim].load() < target && std::chrono::steady_clock::now() < end) {
      std::this_thread::yield();
    }
    Child& c = children[static_cast<std::size_t>(victim)];
    ::kill(c.pid, SIGKILL);
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    ++kills;
    // The server drops a dead client's sessions; then the broker reclaims.
    for (auto& cell : sh->occupant) {
      pid_t dead = c.pid;
      cell.compare_exchange_strong(dead, 0);
    }
    std::uint32_t freed = 0;
    table.Reclaim(c.owner, false, &freed);
    reclaimed += freed;
    spawn(victim);
  }
  sh->stop.store(true);
  for (auto& c : children) {
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << c.pid;
  }
  const Counts counts = table.Count();
  std::printf("kills %d, slots reclaimed from the dead %u, acquisitions %llu, queue repairs %llu\n",
              kills, reclaimed, static_cast<unsigned long long>(sh->acquisitions.load()),
              static_cast<unsigned long long>(table.queue_repairs()));
  EXPECT_GT(kills, 0);
  EXPECT_GT(sh->acquisitions.load(), 0u);
  EXPECT_EQ(sh->violations.load(), 0) << "two live holders of one slot";
  EXPECT_EQ(sh->out_of_range.load(), 0) << "a slot beyond capacity was handed out";
  EXPECT_EQ(counts.free, capacity) << "slots leaked after quiesce";
  EXPECT_EQ(counts.held_action + counts.held_system, 0u);
  EXPECT_EQ(counts.waiters, 0u);
  ::munmap(mem, sizeof(Shared));
  (void)SlotTable::Remove(name);
}

INSTANTIATE_TEST_SUITE_P(Capacities, KillTorture, ::testing::Values(4u, 31u));

}  // namespace
}  // namespace dsb::shm
