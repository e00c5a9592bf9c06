// Chaos with the ledger in etcd (issue 13): three etcd members, three brokers with
// ledger = "etcd" (no coordinator broker), DigiScope-like dsb-load processes on each, and
// dsb-simserver as the judge (its cap far above the limit: `peak` is the most sessions it saw at
// once). Faults drawn from one seed, one every 0.3-2 s: SIGKILL of a DigiScope process (a new one
// starts), SIGKILL of a broker (restarted 0-2 s later), a clean restart (SIGTERM), SIGSTOP of a
// broker for up to 2 (D + H), and SIGKILL of an etcd member (restarted 0.5-5 s later; one member
// down at a time, so quorum holds; the leader is as likely as any). Then everything is healed:
// every broker serves again within a bound made of D, H and an election, the loads stop, and no
// slot may stay held at any broker nor any session at the server.
//
// Loopback only (no namespaces, no root): what this adds to tests/chaos/netns_chaos_test.cc is
// the etcd ledger under the same kind of faults.
//
// Environment:
//   DSB_CHAOS_SEED=N       replay a run (the seed is printed by every run)
//   DSB_CHAOS_SECONDS=N    length of the fault phase (short mode, CI: 30)
//   DSB_CHAOS_LONG=1       long mode: DSB_CHAOS_MINUTES (default 10) of faults
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/etcd_world.h"
#include "tests/support/wait.h"
#include "tests/tools/sim_server_process.h"

namespace dsb::etcdit {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;
namespace json = boost::json;

constexpr auto kTerm = 1000ms;   // D
constexpr auto kDrain = 1000ms;  // H
constexpr int kLimit = 24;
constexpr int kSystemSlots = 3;  // two DigiScope processes and one that replaces a killed one
constexpr int kFloor = 1;        // pool 24 - 3 x (3 + 1) = 12
constexpr int kMaxFaults = 2000;  // bound on faults in any mode
// Capacity comes back within: an old instance's silence (its live key's TTL, rounded up to
// whole seconds) twice, an etcd election and the ~7 s a write may hang meanwhile, two terms,
// the adoption grace, and slack for a busy 2-core machine.
constexpr auto kRecoveryBound = 2 * 3s + 10s + 2 * kTerm + 2s + 20s;

std::uint64_t EnvU64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

class EtcdChaos {
 public:
  EtcdChaos(EtcdWorld& w, std::uint64_t seed) : w_(w), rng_(seed) {}

  void Run(Seconds phase, Clock::time_point load_end) {
    load_end_ = load_end;
    t0_ = Clock::now();
    const auto end = t0_ + std::chrono::duration_cast<Clock::duration>(phase);
    auto next = t0_ + Gap();
    while (Clock::now() < end && faults_.size() < static_cast<std::size_t>(kMaxFaults)) {
      RunDueUndos(false);
      Sample();
      if (Clock::now() >= next) {
        InjectOne();
        next = Clock::now() + Gap();
      }
      std::this_thread::sleep_for(50ms);  // the schedule's step, not a synchronisation
    }
    RunDueUndos(true);
    for (int i = 0; i < w_.brokers(); ++i) {
      if (w_.broker(i).running()) ::kill(w_.broker(i).pid(), SIGCONT);
      if (!w_.broker(i).running()) w_.broker(i).Start();
    }
    for (int m = 0; m < w_.spec().members; ++m) {
      if (member_down_[m]) {
        w_.etcd().Restart(m);
        member_down_[m] = false;
      }
    }
  }

  void Sample() {
    const double current = w_.ServerCurrent();
    if (current > kLimit && first_over_ < 0) first_over_ = Now();
  }

  double first_over() const { return first_over_; }
  std::size_t faults() const { return faults_.size(); }
  std::string Summary() const {
    std::map<std::string, int> by_kind;
    for (const auto& f : faults_) ++by_kind[f];
    std::string out;
    for (const auto& [k, n] : by_kind) out += " " + k + " " + std::to_string(n) + ",";
    return out;
  }

 private:
  double Now() const { return Seconds(Clock::now() - t0_).count(); }
  Clock::duration Gap() { return std::chrono::milliseconds(300 + rng_() % 1700); }
  double Uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng_);
  }
  void Record(const std::string& kind, const std::string& who, double seconds) {
    faults_.push_back(kind);
    std::printf("  t=%7.3f  %-16s %-8s %s\n", Now(), kind.c_str(), who.c_str(),
                seconds > 0 ? (std::to_string(seconds).substr(0, 5) + " s").c_str() : "");
    std::fflush(stdout);
  }
  void Later(double seconds, std::function<void()> f) {
    undos_.emplace_back(
        Clock::now() + std::chrono::duration_cast<Clock::duration>(Seconds(seconds)),
        std::move(f));
  }
  void RunDueUndos(bool all) {
    for (;;) {
      auto it = std::min_element(undos_.begin(), undos_.end(),
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
      if (it == undos_.end() || (!all && it->first > Clock::now())) return;
      auto f = std::move(it->second);
      undos_.erase(it);
      f();
    }
  }
  double LoadLeft() const { return std::max(1.0, Seconds(load_end_ - Clock::now()).count()); }

  void InjectOne() {
    const double d = Seconds(kTerm).count(), h = Seconds(kDrain).count();
    for (int attempt = 0; attempt < 10; ++attempt) {
      const int kind = static_cast<int>(rng_() % 6);
      const int b = static_cast<int>(rng_() % static_cast<std::uint64_t>(w_.brokers()));
      switch (kind) {
        case 0:
        case 1: {  // SIGKILL a DigiScope process; a new one starts on the same broker
          const auto live = w_.LiveInstances(b);
          if (live.empty()) continue;
          ::kill(live[rng_() % live.size()], SIGKILL);
          Record("kill-client", w_.id(b), 0);
          w_.StartLoad(b, 1, 6, LoadLeft(), 20, 150);
          return;
        }
        case 2: {  // SIGKILL a broker; restarted soon after
          if (busy_[b] || !w_.broker(b).running()) continue;
          const double dur = Uniform(0, 2);
          w_.broker(b).Stop(SIGKILL);
          busy_[b] = true;
          Record("kill-broker", w_.id(b), dur);
          Later(dur, [this, b] {
            w_.broker(b).Start();
            busy_[b] = false;
          });
          return;
        }
        case 3: {  // a clean restart: the goodbye (R5), then a new instance
          if (busy_[b] || !w_.broker(b).running()) continue;
          w_.broker(b).Stop(SIGTERM);  // bounded (a minute, then SIGKILL)
          w_.broker(b).Start();
          Record("restart-broker", w_.id(b), 0);
          return;
        }
        case 4: {  // SIGSTOP a broker: its lease lapses on its own clock while it sleeps
          if (busy_[b] || !w_.broker(b).running()) continue;
          const double dur = Uniform(0.2, 2 * (d + h));
          const pid_t pid = w_.broker(b).pid();
          ::kill(pid, SIGSTOP);
          busy_[b] = true;
          Record("stop-broker", w_.id(b), dur);
          Later(dur, [this, b, pid] {
            if (w_.broker(b).pid() == pid) ::kill(pid, SIGCONT);
            busy_[b] = false;
          });
          return;
        }
        case 5: {  // SIGKILL an etcd member (one down at a time: quorum holds)
          if (std::any_of(std::begin(member_down_), std::end(member_down_), [](bool x) { return x; })) {
            continue;
          }
          const int m = static_cast<int>(rng_() % static_cast<std::uint64_t>(w_.spec().members));
          const bool leader = w_.etcd().Leader(std::chrono::milliseconds(2000)) == m;
          const double dur = Uniform(0.5, 5);
          w_.etcd().Kill(m);
          member_down_[m] = true;
          Record(leader ? "kill-etcd-leader" : "kill-etcd", "member" + std::to_string(m), dur);
          Later(dur, [this, m] {
            w_.etcd().Restart(m);
            member_down_[m] = false;
          });
          return;
        }
      }
    }
  }

  EtcdWorld& w_;
  std::mt19937_64 rng_;
  Clock::time_point t0_, load_end_;
  std::vector<std::pair<Clock::time_point, std::function<void()>>> undos_;
  std::vector<std::string> faults_;
  bool busy_[3] = {false, false, false};
  bool member_down_[3] = {false, false, false};
  double first_over_ = -1;
};

TEST(EtcdChaos, TheServerNeverCountsMoreThanTheLimitAndEverySlotComesBack) {
  const std::uint64_t seed = EnvU64("DSB_CHAOS_SEED", std::random_device{}());
  const bool long_mode = EnvU64("DSB_CHAOS_LONG", 0) != 0;
  const Seconds phase =
      long_mode ? Seconds(60.0 * static_cast<double>(EnvU64("DSB_CHAOS_MINUTES", 10)))
                : Seconds(static_cast<double>(EnvU64("DSB_CHAOS_SECONDS", 30)));
  std::printf("etcd chaos: seed %llu (replay: DSB_CHAOS_SEED=%llu), fault phase %.0f s, D = %lld ms, "
              "H = %lld ms, L = %d, 3 etcd members, 3 brokers\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
              phase.count(), static_cast<long long>(kTerm.count()),
              static_cast<long long>(kDrain.count()), kLimit);
  WorldSpec spec;
  spec.members = 3;
  spec.brokers = 3;
  spec.limit = kLimit;
  spec.system_slots = kSystemSlots;
  spec.floor = kFloor;
  spec.term = kTerm;
  spec.drain = kDrain;
  spec.stem = "ec" + std::to_string(::getpid());
  EtcdWorld w;
  bool skip = false;
  const std::string why = w.Start(spec, &skip);
  if (skip) {
    std::printf("SKIPPED: %s\n", why.c_str());
    return;
  }
  ASSERT_EQ(why, "");

  const auto load_end = Clock::now() + std::chrono::duration_cast<Clock::duration>(phase) + 120s;
  const double load_seconds = Seconds(load_end - Clock::now()).count();
  for (int i = 0; i < 3; ++i) ASSERT_NE(w.StartLoad(i, 2, 6, load_seconds, 20, 150), nullptr);
  ASSERT_TRUE(testing::WaitUntil([&] { return w.AllLeased(); }, 60s))
      << "the brokers never all held a lease before the faults";

  EtcdChaos chaos(w, seed);
  chaos.Run(phase, load_end);

  // Healed: a fresh DigiScope on every broker (the running ones may have given up on a broker
  // that was stopped past their patience), and every broker serves again.
  const auto healed = Clock::now();
  for (int i = 0; i < 3; ++i) w.StartLoad(i, 1, 6, load_seconds, 20, 150);
  const bool back = testing::WaitUntil(
      [&] {
        chaos.Sample();
        return w.AllLeased();
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(kRecoveryBound));
  const double recovery_s = Seconds(Clock::now() - healed).count();

  // Quiesce: the loads stop (SIGTERM: they close what they hold); nothing may stay held.
  w.StopLoads();
  const bool quiet = testing::WaitUntil(
      [&] { return w.HeldEverywhere() == 0 && w.ServerCurrent() == 0; }, 30s);
  const std::int64_t held = w.HeldEverywhere();
  const double server_after = w.ServerCurrent();
  const json::object u = w.ServerUser();
  const double peak = tools_test::Num(u, "peak");
  std::printf("etcd chaos: seed %llu: %zu faults:%s\n", static_cast<unsigned long long>(seed),
              chaos.faults(), chaos.Summary().c_str());
  std::printf("etcd chaos: server peak %.0f (limit %d), sessions opened %.0f, held at the brokers "
              "after quiesce %lld, server count after quiesce %.0f, capacity back %.1f s after the "
              "heal (bound %.0f s)%s\n",
              peak, kLimit, tools_test::Num(u, "opened"), static_cast<long long>(held),
              server_after, recovery_s, Seconds(kRecoveryBound).count(), back ? "" : " NOT BACK");
  if (chaos.first_over() >= 0) {
    std::printf("etcd chaos: S VIOLATED (seed %llu): the server first counted more than %d at "
                "t=%.3f (faults above)\n",
                static_cast<unsigned long long>(seed), kLimit, chaos.first_over());
  }
  EXPECT_GT(chaos.faults(), 0u);
  EXPECT_GT(tools_test::Num(u, "opened"), 0);
  EXPECT_LE(peak, kLimit) << "S broken at the server: seed " << seed;
  EXPECT_TRUE(back) << "capacity not back within the bound (seed " << seed << ")";
  EXPECT_TRUE(quiet) << "slots held after quiesce: " << held << " at the brokers, " << server_after
                     << " at the server (seed " << seed << ")";
}

}  // namespace
}  // namespace dsb::etcdit
