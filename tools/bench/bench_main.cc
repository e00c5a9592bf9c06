// dsb-bench: the dsb slot-table fast path side by side with the usual
// cross-process counting primitives, all in one run (numbers and how to read
// them: docs/benchmarks.md).
//
//   dsb-bench [--broker PATH] [Google Benchmark flags, e.g. --benchmark_filter=Contended]
//
// It starts its own dsb-broker (next to itself, or PATH) with a throw-away
// config in /tmp/dsb-bench-XXXXXX, and removes every process, segment, SysV
// set and socket it made, also when interrupted (SIGINT/SIGTERM).
//
// Families (each name starts with the primitive):
//   BM_<P>...AcquireRelease / TrywaitPost / ...   uncontended pair, one thread
//   BM_<P>Contended/cap:N                        2 processes x 4 threads
//   BM_{Dsb,PosixSem}NearlyFull/cap:N            all slots held but one at a
//                                                random position (issue 14)
//   BM_{Dsb,PosixSem}Uncontended/cap:N           uncontended pair in a table
//                                                of N slots (issue 14)
//   BM_<P>WakeLatency                            release in one process ->
//                                                waiter in another running
//   BM_DsbReclaimAfterKill{Shm,Broker}           SIGKILLed holder -> slot usable
//   BM_DsbBrokerRss64Clients                     broker VmRSS, 64 registrations
//   BM_SocketBroker{Ping,EchoFloor}              Unix-socket round trips
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/local_frame.h"
#include "common/local_protocol.h"
#include "shm/futex.h"
#include "tools/bench/bench_support.h"
#include "tools/bench/primitives.h"
#include "dsb/version.h"

namespace dsb::bench {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::uint32_t kUncontendedCapacity = 4;
constexpr int kChildThreads = 4;  // the helper process runs as many threads as the parent
constexpr milliseconds kHelperTimeout = seconds(20);
constexpr std::chrono::nanoseconds kForever{-1};

void Fail(benchmark::State& state, const std::string& what) { state.SkipWithError(what.c_str()); }

// Sets p50/p99/max counters (in ns) from `samples`.
void SetLatencyCounters(benchmark::State& state, std::vector<double> samples,
                        const std::string& prefix = "") {
  if (samples.empty()) return;
  state.counters[prefix + "p50_ns"] = Quantile(samples, 0.50);
  state.counters[prefix + "p99_ns"] = Quantile(samples, 0.99);
  state.counters[prefix + "max_ns"] = samples.back();  // Quantile sorted them
}

// The fraction of `samples` above `limit`.
double ShareOver(const std::vector<double>& samples, double limit) {
  if (samples.empty()) return 0;
  const auto n = std::count_if(samples.begin(), samples.end(), [&](double v) { return v > limit; });
  return static_cast<double>(n) / static_cast<double>(samples.size());
}

// =============================================================================
// Uncontended: one thread, one process, an acquire+release pair per iteration.
// =============================================================================

template <class P, bool kTry>
void BM_Pair(benchmark::State& state) {
  auto made = P::Make(kUncontendedCapacity, 1);
  if (!made.ok()) return Fail(state, made.status().message());
  P& p = **made;
  typename P::Token t{};
  for (auto _ : state) {
    bool ok = false;
    if constexpr (kTry) {
      ok = p.TryAcquire(0, t);
    } else {
      ok = p.Acquire(0, t);
    }
    if (!ok) [[unlikely]] {
      Fail(state, "acquire failed although capacity was free");
      break;
    }
    p.Release(0, t);
  }
  state.SetItemsProcessed(state.iterations());
}

// =============================================================================
// Capacity scaling (issue 14): the cost of finding a slot as the table grows.
// =============================================================================

// A slot table of `slots` slots, all enabled, made by the bench itself.
struct OwnTable {
  std::string name;
  std::unique_ptr<shm::SlotTable> table;
  ~OwnTable() {
    if (table == nullptr) return;
    table.reset();
    (void)shm::SlotTable::Remove(name);
    UnregisterCleanupPath("/dev/shm/" + name);
  }
  Status Make(std::uint32_t slots, const char* stem) {
    name = "dsb-bench" + std::to_string(::getpid()) + "-" + stem;
    (void)shm::SlotTable::Remove(name);
    shm::CreateOptions o;
    o.name = name;
    o.target = "bench";
    o.slot_count = slots;
    o.capacity = slots;
    auto made = shm::SlotTable::Create(o);
    if (!made.ok()) return made.status();
    RegisterCleanupPath("/dev/shm/" + name);
    table = std::move(made).value();
    return Status::Ok();
  }
};

// Nearly full: every slot of a table of `cap` is held by another owner but
// one, at a random position (fixed per capacity, so runs compare). Each
// iteration takes that slot and gives it back, with this thread's
// thread-local hint first pointed at a random held slot (a stale hint: the
// slot it used last is someone else's now), so the finder has to search.
void BM_DsbNearlyFull(benchmark::State& state) {
  const auto cap = static_cast<std::uint32_t>(state.range(0));
  OwnTable own;
  if (Status st = own.Make(cap, "full"); !st.ok()) return Fail(state, st.message());
  shm::SlotTable& t = *own.table;
  const std::uint64_t others = shm::HeldWord(t.AllocateOwner(), false);
  const std::uint64_t me = shm::HeldWord(t.AllocateOwner(), false);
  std::mt19937 rng(cap * 7919u + 1);
  const std::uint32_t free_at = static_cast<std::uint32_t>(rng() % cap);
  std::vector<std::uint32_t> held;
  for (std::uint32_t i = 0; i < cap; ++i) {
    const std::uint32_t idx = t.TryAcquireIndex(others);
    if (idx == shm::SlotTable::kNoSlot) return Fail(state, "could not fill the table");
    held.push_back(idx);
  }
  t.Release(free_at, others);
  std::vector<std::uint32_t> stale;  // hints: random held slots
  for (int i = 0; i < 1024; ++i) {
    std::uint32_t h = static_cast<std::uint32_t>(rng() % cap);
    if (h == free_at) h = (h + 1) % cap;
    stale.push_back(h);
  }
  std::size_t k = 0;
  for (auto _ : state) {
    shm::detail::tl_hint = stale[k++ & 1023];
    const std::uint32_t idx = t.TryAcquireIndex(me);
    if (idx != free_at) [[unlikely]] {
      Fail(state, "took slot " + std::to_string(idx) + ", expected the free one " +
                      std::to_string(free_at));
      break;
    }
    t.Release(idx, me);
  }
  state.counters["free_at"] = free_at;
  for (const std::uint32_t idx : held) {
    if (idx != free_at) t.Release(idx, others);
  }
}

// The sem_t equivalent: a semaphore with one unit left (its cost does not
// depend on how many units are taken), sem_wait + sem_post.
void BM_PosixSemNearlyFull(benchmark::State& state) {
  auto made = PosixSem::Make(1, 1);
  if (!made.ok()) return Fail(state, made.status().message());
  PosixSem& p = **made;
  PosixSem::Token t{};
  for (auto _ : state) {
    if (!p.Acquire(0, t)) [[unlikely]] {
      Fail(state, "sem_wait failed");
      break;
    }
    p.Release(0, t);
  }
}

// Uncontended in a table of `cap` slots (all enabled and free): the
// thread-local hint finds the slot used last.
void BM_DsbUncontended(benchmark::State& state) {
  const auto cap = static_cast<std::uint32_t>(state.range(0));
  OwnTable own;
  if (Status st = own.Make(cap, "unc"); !st.ok()) return Fail(state, st.message());
  shm::SlotTable& t = *own.table;
  const std::uint64_t me = shm::HeldWord(t.AllocateOwner(), false);
  for (auto _ : state) {
    const std::uint32_t idx = t.TryAcquireIndex(me);
    if (idx == shm::SlotTable::kNoSlot) [[unlikely]] {
      Fail(state, "acquire failed although capacity was free");
      break;
    }
    t.Release(idx, me);
  }
}

void BM_PosixSemUncontended(benchmark::State& state) {
  auto made = PosixSem::Make(static_cast<std::uint32_t>(state.range(0)), 1);
  if (!made.ok()) return Fail(state, made.status().message());
  PosixSem& p = **made;
  PosixSem::Token t{};
  for (auto _ : state) {
    if (!p.TryAcquire(0, t)) [[unlikely]] {
      Fail(state, "sem_trywait failed");
      break;
    }
    p.Release(0, t);
  }
}

// =============================================================================
// Unix-socket round trips: the real broker's "ping", and an echo floor.
// =============================================================================

// The ping request's frame body, as the admin client sends it; the
// connection stays open, so each round trip is framing + dispatch only.
const std::string kPing =
    boost::json::serialize(local_protocol::Request(local_protocol::Op::kPing));

void PingLoop(benchmark::State& state, int fd) {
  for (auto _ : state) {
    if (Status s = WriteFrame(fd, kPing); !s.ok()) {
      Fail(state, s.message());
      break;
    }
    auto reply = ReadFrame(fd, seconds(5));
    if (!reply.ok()) {
      Fail(state, reply.status().message());
      break;
    }
    benchmark::DoNotOptimize(reply->data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_SocketBrokerPing(benchmark::State& state) {
  auto fd = ConnectLocal(CurrentBroker()->socket_path());
  if (!fd.ok()) return Fail(state, fd.status().message());
  PingLoop(state, *fd);
  ::close(*fd);
}

// The same framing against a forked process that answers without parsing:
// what any broker round trip costs at least on this machine.
void BM_SocketBrokerEchoFloor(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Fail(state, "socketpair failed");
  }
  const std::string kOkReply = boost::json::serialize(local_protocol::OkReply());
  auto child = ChildProcess::Spawn([&] {
    ::close(sv[0]);
    for (;;) {
      if (!ReadFrame(sv[1], milliseconds(-1)).ok()) return 0;  // EOF: the bench is done
      if (!WriteFrame(sv[1], kOkReply).ok()) return 0;
    }
  });
  ::close(sv[1]);
  if (!child.ok()) {
    ::close(sv[0]);
    return Fail(state, child.status().message());
  }
  PingLoop(state, sv[0]);
  ::close(sv[0]);
  (void)child->Wait(kHelperTimeout);
}

// =============================================================================
// Contended: 2 processes x 4 threads loop acquire+release on one primitive.
//
// Google Benchmark runs 4 threads in this process. Its thread 0 builds the
// primitive and forks the helper process *before* the start barrier of the
// timed loop (the other 3 threads wait in that barrier, holding no lock), so
// the child starts from a quiet copy. The child runs 4 threads of the same
// loop from `go` until `stop`; thread 0 sets `stop` after the end barrier,
// i.e. once all 4 parent threads are done, and reaps the child with its
// rusage. Counters, over both processes:
//   cpu_ns_per_op  (parent process CPU + child CPU) / (parent + child ops)
//   ops_per_s      (parent + child ops) / wall time from go to stop
//   child_share    child ops / all ops (0.5 = both processes got equal turns)
//   waited_share   (dsb only) acquires served by the FIFO wait queue / all ops
// =============================================================================

struct ContendedControl {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
  std::atomic<int> stop{0};
  std::atomic<int> failed{0};
  std::atomic<std::uint64_t> ops{0};
};

template <class P>
struct ContendedRun {
  std::unique_ptr<P> prim;
  std::unique_ptr<SharedPage<ContendedControl>> control;
  ChildProcess child;
  std::chrono::nanoseconds cpu0{};
  Clock::time_point wall0;
  std::uint64_t grants0 = 0;
  std::string error;
};

// Waiters served through the dsb slot table's FIFO queue (so far), i.e. how
// often an acquire really had to wait; nullopt for the other primitives.
template <class P>
std::optional<std::uint64_t> QueueGrants(P& p) {
  if constexpr (requires { p.table(); }) {
    return p.table().queue_grants();
  } else if constexpr (requires { p.monitor(); }) {
    return p.monitor().queue_grants();
  } else {
    return std::nullopt;
  }
}

template <class P>
int ContendedChild(P& p, ContendedControl& c) {
  if (!p.EnterProcess(1).ok()) {
    c.failed.store(1);
    return 2;
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kChildThreads; ++i) {
    threads.emplace_back([&] {
      c.ready.fetch_add(1);
      while (c.go.load(std::memory_order_acquire) == 0) std::this_thread::yield();
      std::uint64_t n = 0;
      typename P::Token t{};
      while (c.stop.load(std::memory_order_relaxed) == 0) {
        if (!p.Acquire(1, t)) {
          std::fprintf(stderr, "dsb-bench helper: acquire failed: %s\n",
                       LastError().message().c_str());
          c.failed.store(1);
          break;
        }
        p.Release(1, t);
        ++n;
      }
      c.ops.fetch_add(n);
    });
  }
  for (auto& t : threads) t.join();
  return c.failed.load() != 0 ? 3 : 0;
}

template <class P>
std::string SetUpContended(ContendedRun<P>& run, std::uint32_t capacity) {
  auto made = P::Make(capacity, 2);
  if (!made.ok()) return made.status().message();
  auto control = std::make_unique<SharedPage<ContendedControl>>();
  P* p = made->get();
  ContendedControl* c = control->get();
  auto child = ChildProcess::Spawn([p, c] { return ContendedChild(*p, *c); });
  if (!child.ok()) return child.status().message();
  run.child = std::move(child).value();
  if (!WaitUntil([c] { return c->ready.load() == kChildThreads || c->failed.load() != 0; },
                 kHelperTimeout, &run.child) ||
      c->failed.load() != 0) {
    run.child.Kill();
    return "helper process did not start (" + DescribeWaitStatus(run.child.status()) + ")";
  }
  run.prim = std::move(made).value();
  run.control = std::move(control);
  run.grants0 = QueueGrants(*run.prim).value_or(0);
  run.cpu0 = ProcessCpuTime();
  run.wall0 = Clock::now();
  c->go.store(1, std::memory_order_release);
  return {};
}

template <class P>
void FinishContended(benchmark::State& state, ContendedRun<P>& run) {
  if (run.control == nullptr) return;  // set-up failed; already reported
  ContendedControl& c = **run.control;
  c.stop.store(1);
  const auto wall1 = Clock::now();
  const auto cpu1 = ProcessCpuTime();
  struct rusage usage {};
  auto waited = run.child.Wait(kHelperTimeout, &usage);
  if (!state.error_occurred()) {
    if (!waited.ok() || *waited != 0 || c.failed.load() != 0) {
      Fail(state, "helper process failed (" +
                      (waited.ok() ? DescribeWaitStatus(*waited) : waited.status().message()) +
                      ")");
    } else {
      const double parent_ops = static_cast<double>(state.iterations()) * state.threads();
      const auto child_ops = static_cast<double>(c.ops.load());
      const double ops = parent_ops + child_ops;
      const auto cpu = (cpu1 - run.cpu0) + CpuTimeOf(usage);
      const double wall = std::chrono::duration<double>(wall1 - run.wall0).count();
      state.counters["cpu_ns_per_op"] = static_cast<double>(cpu.count()) / ops;
      state.counters["ops_per_s"] = ops / wall;
      state.counters["child_share"] = child_ops / ops;
      if (auto grants = QueueGrants(*run.prim)) {
        state.counters["waited_share"] = static_cast<double>(*grants - run.grants0) / ops;
      }
    }
  }
  run.prim.reset();
  run.control.reset();
}

template <class P>
void BM_Contended(benchmark::State& state) {
  static ContendedRun<P> run;  // shared by this run's threads; one benchmark runs at a time
  if (state.thread_index() == 0) {
    run = ContendedRun<P>{};
    run.error = SetUpContended(run, static_cast<std::uint32_t>(state.range(0)));
  }
  typename P::Token t{};
  for (auto _ : state) {
    P* p = run.prim.get();  // written by thread 0 before the start barrier
    if (p == nullptr) [[unlikely]] {
      Fail(state, run.error);
      break;
    }
    if (!p->Acquire(0, t)) [[unlikely]] {
      Fail(state, "acquire failed in the parent: " + LastError().message());
      break;
    }
    p->Release(0, t);
  }
  // The end barrier has passed: every thread of this process is done.
  if (state.thread_index() == 0) FinishContended(state, run);
}

// =============================================================================
// Wake latency: the parent holds the only unit; the child blocks in Acquire;
// once the child's thread is asleep (state 'S' in /proc), the parent stamps
// CLOCK_MONOTONIC and releases; the child stamps when its Acquire returns.
// Iteration time (manual) = that hand-off; p50/p99 as counters.
// =============================================================================

struct WakeControl {
  std::atomic<std::uint32_t> round{0};    // parent -> child: start waiting for round k
  std::atomic<std::uint32_t> waiting{0};  // child -> parent: about to block in round k
  std::atomic<std::uint32_t> done{0};     // child -> parent (futex word): round k measured
  std::atomic<std::uint32_t> quit{0};
  std::atomic<std::uint32_t> entered{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<std::int64_t> released_at{0};
  std::atomic<std::int64_t> latency_ns{0};
};

template <class P>
int WakeChild(P& p, WakeControl& c) {
  if (!p.EnterProcess(1).ok()) {
    c.failed.store(1);
    return 2;
  }
  c.entered.store(1);
  for (std::uint32_t k = 1;; ++k) {
    for (;;) {
      const std::uint32_t r = c.round.load(std::memory_order_acquire);
      if (c.quit.load() != 0) return 0;
      if (r >= k) break;
      shm::FutexWait(&c.round, r, kForever);
    }
    c.waiting.store(k, std::memory_order_release);
    typename P::Token t{};
    if (!p.Acquire(1, t)) {
      c.failed.store(1);
      shm::FutexWake(&c.done, 1);
      return 3;
    }
    const std::int64_t woke = NowNs();
    c.latency_ns.store(woke - c.released_at.load(std::memory_order_acquire));
    p.Release(1, t);
    c.done.store(k, std::memory_order_release);
    shm::FutexWake(&c.done, 1);
  }
}

template <class P>
void BM_WakeLatency(benchmark::State& state) {
  auto made = P::Make(1, 2);
  if (!made.ok()) return Fail(state, made.status().message());
  P& p = **made;
  SharedPage<WakeControl> control;
  WakeControl& c = *control;
  auto spawned = ChildProcess::Spawn([&] { return WakeChild(p, c); });
  if (!spawned.ok()) return Fail(state, spawned.status().message());
  ChildProcess& child = *spawned;
  typename P::Token held{};
  if (!WaitUntil([&] { return c.entered.load() != 0 || c.failed.load() != 0; }, kHelperTimeout,
                 &child) ||
      c.failed.load() != 0 || !p.Acquire(0, held)) {
    return Fail(state, "helper process did not start");
  }
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(state.max_iterations));
  std::uint32_t k = 0;
  for (auto _ : state) {
    ++k;
    c.round.store(k, std::memory_order_release);
    shm::FutexWake(&c.round, 1);
    // Asleep inside Acquire, not merely on its way there.
    if (!WaitUntil(
            [&] {
              return c.waiting.load(std::memory_order_acquire) == k &&
                     ThreadState(child.pid()) == 'S';
            },
            kHelperTimeout, &child)) {
      Fail(state, "helper never blocked");
      break;
    }
    c.released_at.store(NowNs(), std::memory_order_release);
    p.Release(0, held);
    const auto deadline = Clock::now() + kHelperTimeout;
    std::uint32_t d = 0;
    while ((d = c.done.load(std::memory_order_acquire)) < k && c.failed.load() == 0 &&
           Clock::now() < deadline) {
      shm::FutexWait(&c.done, d, milliseconds(100));
    }
    if (d < k) {
      Fail(state, "helper was not woken");
      break;
    }
    const auto ns = static_cast<double>(c.latency_ns.load());
    samples.push_back(ns);
    state.SetIterationTime(ns * 1e-9);
    if (!p.Acquire(0, held)) {
      Fail(state, "parent could not take the unit back");
      break;
    }
  }
  c.quit.store(1);
  c.round.fetch_add(1);
  shm::FutexWake(&c.round, 1);
  auto waited = child.Wait(kHelperTimeout);
  p.Release(0, held);
  if (!state.error_occurred() && (!waited.ok() || *waited != 0)) {
    Fail(state, "helper process failed");
  }
  SetLatencyCounters(state, std::move(samples));
}

// =============================================================================
// Slot reclaim after SIGKILL.
// =============================================================================

// (a) Shared-memory level: the child holds every slot and is SIGKILLed; the
// parent reaps it and calls Reclaim at once, then takes a slot. Time: kill()
// to the parent's successful TryAcquire. Counter reap_*: kill() to waitpid.
void BM_DsbReclaimAfterKillShm(benchmark::State& state) {
  auto made = DsbSlotTable::Make(4, 1);
  if (!made.ok()) return Fail(state, made.status().message());
  shm::SlotTable& table = (*made)->table();
  const std::uint64_t mine = shm::HeldWord(table.AllocateOwner(), false);
  SharedPage<std::atomic<std::uint32_t>> taken;
  std::vector<double> reap;
  std::vector<double> total;
  for (auto _ : state) {
    const std::uint32_t owner = table.AllocateOwner();
    const std::uint64_t word = shm::HeldWord(owner, false);
    taken->store(0);
    auto child = ChildProcess::Spawn([&] {
      std::uint32_t n = 0;
      while (table.TryAcquire(word)) ++n;
      taken->store(n);
      for (;;) ::pause();
      return 0;
    });
    if (!child.ok()) {
      Fail(state, child.status().message());
      break;
    }
    if (!WaitUntil([&] { return taken->load() != 0; }, kHelperTimeout, &*child) ||
        table.TryAcquire(mine)) {
      Fail(state, "helper did not take every slot");
      break;
    }
    const std::int64_t t0 = NowNs();
    child->Kill();  // SIGKILL + blocking waitpid
    const std::int64_t t1 = NowNs();
    table.Reclaim(owner, /*quarantine=*/false);
    const auto idx = table.TryAcquire(mine);
    const std::int64_t t2 = NowNs();
    if (!idx) {
      Fail(state, "no slot after Reclaim");
      break;
    }
    table.Release(*idx, mine);
    reap.push_back(static_cast<double>(t1 - t0));
    total.push_back(static_cast<double>(t2 - t0));
    state.SetIterationTime(static_cast<double>(t2 - t0) * 1e-9);
  }
  state.counters["over_1ms_share"] = ShareOver(total, 1e6);
  SetLatencyCounters(state, std::move(total));
  SetLatencyCounters(state, std::move(reap), "reap_");
}

// (b) Through the real broker: a child process registers its own Client and
// takes every action slot; a thread of the parent is blocked in
// Client::Acquire; the child is SIGKILLed. Time: kill() to the return of the
// parent's Acquire (broker sees the socket close, reclaims, the queue grants).
struct KillControl {
  std::atomic<std::uint32_t> taken{0};
  std::atomic<std::uint32_t> failed{0};
};

class ParentWaiter {
 public:
  explicit ParentWaiter(DsbClient& p) : p_(p), thread_([this] { Loop(); }) {}
  ~ParentWaiter() {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  pid_t tid() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return tid_ != 0; });
    return tid_;
  }
  void Arm(std::uint32_t round) {
    {
      std::lock_guard lock(mu_);
      armed_ = round;
    }
    cv_.notify_all();
  }
  // Waits for round `round` to finish; returns when the Acquire returned
  // (NowNs) or nullopt on failure/timeout. The permit is kept in `permit`.
  std::optional<std::int64_t> Await(std::uint32_t round, DsbClient::Token& permit) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, kHelperTimeout, [&] { return done_ == round; }) || !ok_) {
      return std::nullopt;
    }
    permit = std::move(permit_);
    return acquired_at_;
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    tid_ = ::gettid();
    cv_.notify_all();
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || armed_ != done_; });
      if (quit_) return;
      const std::uint32_t round = armed_;
      lock.unlock();
      DsbClient::Token permit;
      const bool ok = p_.Acquire(0, permit);
      const std::int64_t at = NowNs();
      lock.lock();
      permit_ = std::move(permit);
      ok_ = ok;
      acquired_at_ = at;
      done_ = round;
      cv_.notify_all();
    }
  }

  DsbClient& p_;
  std::mutex mu_;
  std::condition_variable cv_;
  pid_t tid_ = 0;
  std::uint32_t armed_ = 0;
  std::uint32_t done_ = 0;
  bool ok_ = false;
  bool quit_ = false;
  std::int64_t acquired_at_ = 0;
  DsbClient::Token permit_;
  std::thread thread_;  // last: starts after the members above exist
};

void BM_DsbReclaimAfterKillBroker(benchmark::State& state) {
  auto made = DsbClient::Make(4, 2);
  if (!made.ok()) return Fail(state, made.status().message());
  DsbClient& p = **made;
  SharedPage<KillControl> control;
  KillControl& c = *control;
  std::vector<double> total;
  std::uint32_t round = 0;
  {
    ParentWaiter waiter(p);
    const pid_t waiter_tid = waiter.tid();
    for (auto _ : state) {
      ++round;
      c.taken.store(0);
      auto child = ChildProcess::Spawn([&] {
        if (!p.EnterProcess(1).ok()) {
          c.failed.store(1);
          return 2;
        }
        std::vector<DsbClient::Token> held;
        for (;;) {
          DsbClient::Token t;
          if (!p.TryAcquire(1, t)) break;
          held.push_back(std::move(t));
        }
        c.taken.store(static_cast<std::uint32_t>(held.size()));
        for (;;) ::pause();
        return 0;
      });
      if (!child.ok()) {
        Fail(state, child.status().message());
        break;
      }
      if (!WaitUntil([&] { return c.taken.load() != 0 || c.failed.load() != 0; },
                     kHelperTimeout, &*child) ||
          c.failed.load() != 0) {
        Fail(state, "helper did not register and take the slots");
        break;
      }
      waiter.Arm(round);
      if (!WaitUntil(
              [&] {
                return p.monitor().Count().waiters == 1 &&
                       ThreadState(::getpid(), waiter_tid) == 'S';
              },
              kHelperTimeout)) {
        Fail(state, "parent's Acquire did not block");
        break;
      }
      const std::int64_t t0 = NowNs();
      ::kill(child->pid(), SIGKILL);
      DsbClient::Token permit;
      const auto acquired_at = waiter.Await(round, permit);
      child->Kill();  // reap
      if (!acquired_at) {
        Fail(state, "parent's Acquire did not return a slot after the kill");
        break;
      }
      total.push_back(static_cast<double>(*acquired_at - t0));
      state.SetIterationTime(static_cast<double>(*acquired_at - t0) * 1e-9);
      permit.Release();
      if (!p.WaitQuiet(1, kHelperTimeout)) {
        Fail(state, "broker did not free the killed client's system slot");
        break;
      }
    }
  }
  state.counters["over_1ms_share"] = ShareOver(total, 1e6);
  SetLatencyCounters(state, std::move(total));
}

// =============================================================================
// Broker resident memory with 64 registered clients (a helper process holds
// 64 dsb::Client registrations on one target).
// =============================================================================

struct RssControl {
  std::atomic<std::uint32_t> connected{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<std::uint32_t> stop{0};
};

constexpr std::uint32_t kRssClients = 64;

void BM_DsbBrokerRss64Clients(benchmark::State& state) {
  BrokerProcess& broker = *CurrentBroker();
  auto monitor = shm::SlotTable::Attach(broker.SegmentName("rss"));
  if (!monitor.ok()) return Fail(state, monitor.status().message());
  const auto before = ReadVmKb(broker.pid());
  SharedPage<RssControl> control;
  RssControl& c = *control;
  auto child = ChildProcess::Spawn([&] {
    std::vector<std::unique_ptr<dsb::Client>> clients;
    for (std::uint32_t i = 0; i < kRssClients; ++i) {
      ClientOptions o;
      o.socket_path = broker.socket_path();
      o.target = "rss";
      o.name = "rss-" + std::to_string(i);
      std::error_code ec;
      clients.push_back(dsb::Client::Connect(o, ec));
      if (ec) {
        c.failed.store(1);
        return 2;
      }
    }
    c.connected.store(kRssClients);
    while (c.stop.load() == 0) shm::FutexWait(&c.stop, 0, kForever);
    return 0;
  });
  if (!child.ok()) return Fail(state, child.status().message());
  if (!WaitUntil([&] { return c.connected.load() == kRssClients || c.failed.load() != 0; },
                 kHelperTimeout, &*child) ||
      c.failed.load() != 0 ||
      !WaitUntil([&] { return (*monitor)->Count().held_system == kRssClients; }, kHelperTimeout)) {
    return Fail(state, "helper could not register 64 clients");
  }
  const auto rss = ReadVmKb(broker.pid(), "VmRSS:");
  const auto hwm = ReadVmKb(broker.pid(), "VmHWM:");
  for (auto _ : state) benchmark::DoNotOptimize(rss);
  c.stop.store(1);
  shm::FutexWake(&c.stop, 1);
  (void)child->Wait(kHelperTimeout);
  if (!rss || !hwm || !before) return Fail(state, "cannot read the broker's /proc status");
  state.counters["rss_kb_before"] = static_cast<double>(*before);
  state.counters["rss_kb_64_clients"] = static_cast<double>(*rss);
  state.counters["hwm_kb"] = static_cast<double>(*hwm);
}

// =============================================================================

void RegisterAll() {
  using benchmark::RegisterBenchmark;
  // Uncontended pairs.
  RegisterBenchmark("BM_DsbClientTryAcquireRelease", BM_Pair<DsbClient, true>);
  RegisterBenchmark("BM_DsbClientAcquireRelease", BM_Pair<DsbClient, false>);
  RegisterBenchmark("BM_DsbSlotTableTryAcquireRelease", BM_Pair<DsbSlotTable, true>);
  RegisterBenchmark("BM_DsbSlotTableAcquireRelease", BM_Pair<DsbSlotTable, false>);
  RegisterBenchmark("BM_PosixSemTrywaitPost", BM_Pair<PosixSem, true>);
  RegisterBenchmark("BM_PosixSemWaitPost", BM_Pair<PosixSem, false>);
  RegisterBenchmark("BM_BoostIpcSemTryWaitPost", BM_Pair<BoostIpcSem, true>);
  RegisterBenchmark("BM_BoostIpcSemWaitPost", BM_Pair<BoostIpcSem, false>);
  RegisterBenchmark("BM_SysvSemUndoWaitPost", BM_Pair<SysvSemUndo, false>);
  RegisterBenchmark("BM_SysvSemUndoNowaitPost", BM_Pair<SysvSemUndo, true>);
  RegisterBenchmark("BM_PipeTokenReadWrite", BM_Pair<PipeToken, false>);
  RegisterBenchmark("BM_SocketBrokerPing", BM_SocketBrokerPing)->UseRealTime();
  RegisterBenchmark("BM_SocketBrokerEchoFloor", BM_SocketBrokerEchoFloor)->UseRealTime();

  // Contended: 2 processes x 4 threads.
  const std::pair<const char*, void (*)(benchmark::State&)> contended[] = {
      {"BM_DsbSlotTableContended", BM_Contended<DsbSlotTable>},
      {"BM_DsbClientContended", BM_Contended<DsbClient>},
      {"BM_PosixSemContended", BM_Contended<PosixSem>},
      {"BM_BoostIpcSemContended", BM_Contended<BoostIpcSem>},
      {"BM_SysvSemUndoContended", BM_Contended<SysvSemUndo>},
      {"BM_PipeTokenContended", BM_Contended<PipeToken>},
  };
  for (const auto& [name, fn] : contended) {
    RegisterBenchmark(name, fn)->ArgName("cap")->Arg(4)->Arg(31)->Threads(4)->UseRealTime();
  }
  // Issue 14: how the costs grow with the table (the raw table and sem_t).
  for (const auto& [name, fn] : {contended[0], contended[2]}) {
    RegisterBenchmark((std::string(name) + "Scaling").c_str(), fn)  // the name is copied
        ->ArgName("cap")
        ->Arg(32)->Arg(128)->Arg(512)->Arg(2048)->Arg(8192)
        ->Threads(4)
        ->UseRealTime();
  }
  const std::pair<const char*, void (*)(benchmark::State&)> scaling[] = {
      {"BM_DsbNearlyFull", BM_DsbNearlyFull},
      {"BM_PosixSemNearlyFull", BM_PosixSemNearlyFull},
      {"BM_DsbUncontended", BM_DsbUncontended},
      {"BM_PosixSemUncontended", BM_PosixSemUncontended},
  };
  for (const auto& [name, fn] : scaling) {
    RegisterBenchmark(name, fn)->ArgName("cap")->Arg(32)->Arg(128)->Arg(512)->Arg(2048)->Arg(8192);
  }

  // Wake latency.
  const std::pair<const char*, void (*)(benchmark::State&)> wake[] = {
      {"BM_DsbSlotTableWakeLatency", BM_WakeLatency<DsbSlotTable>},
      {"BM_DsbClientWakeLatency", BM_WakeLatency<DsbClient>},
      {"BM_PosixSemWakeLatency", BM_WakeLatency<PosixSem>},
      {"BM_BoostIpcSemWakeLatency", BM_WakeLatency<BoostIpcSem>},
      {"BM_SysvSemUndoWakeLatency", BM_WakeLatency<SysvSemUndo>},
      {"BM_PipeTokenWakeLatency", BM_WakeLatency<PipeToken>},
  };
  for (const auto& [name, fn] : wake) {
    RegisterBenchmark(name, fn)->Iterations(2000)->UseManualTime();
  }

  RegisterBenchmark("BM_DsbReclaimAfterKillShm", BM_DsbReclaimAfterKillShm)
      ->Iterations(200)
      ->UseManualTime();
  RegisterBenchmark("BM_DsbReclaimAfterKillBroker", BM_DsbReclaimAfterKillBroker)
      ->Iterations(200)
      ->UseManualTime();
  RegisterBenchmark("BM_DsbBrokerRss64Clients", BM_DsbBrokerRss64Clients)->Iterations(1);
}

// The broker's targets: "c<capacity>p<processes>" for the DsbClient
// primitive (limit = action capacity + one system slot per registered
// client), and "rss" for the 64 registrations.
std::vector<BenchTarget> BrokerTargets() {
  std::vector<BenchTarget> targets;
  for (auto [capacity, processes] : {std::pair{kUncontendedCapacity, 1}, std::pair{4u, 2},
                                     std::pair{31u, 2}, std::pair{1u, 2}}) {
    targets.push_back({ClientTargetName(capacity, processes),
                       static_cast<int>(capacity) + processes});
  }
  targets.push_back({"rss", static_cast<int>(kRssClients) + 2});
  return targets;
}

std::string FirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace
}  // namespace dsb::bench

int main(int argc, char** argv) {
  namespace bench = dsb::bench;
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::printf("dsb-bench %s\n", DSB_VERSION_STRING);
    return 0;
  }
  std::filesystem::path broker_path;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--broker" && i + 1 < argc) {
      broker_path = argv[++i];
    } else if (a.starts_with("--broker=")) {
      broker_path = std::string(a.substr(9));
    } else {
      args.push_back(argv[i]);
    }
  }
  if (broker_path.empty()) {
    std::error_code ec;
    broker_path = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "dsb-broker";
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;

  bench::InstallCleanupHandlers();
  auto broker = bench::BrokerProcess::Start(broker_path, bench::BrokerTargets());
  if (!broker.ok()) {
    std::fprintf(stderr, "dsb-bench: %s\n", broker.status().message().c_str());
    return 1;
  }
  bench::SetCurrentBroker(broker->get());
  benchmark::AddCustomContext("dsb_broker", broker_path.string());
  benchmark::AddCustomContext("loadavg_at_start", bench::FirstLine("/proc/loadavg"));
  if (auto rss = bench::ReadVmKb((*broker)->pid())) {
    benchmark::AddCustomContext("broker_rss_kb_at_start", std::to_string(*rss));
  }
  bench::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  bench::SetCurrentBroker(nullptr);
  (*broker)->Stop();
  return 0;
}
