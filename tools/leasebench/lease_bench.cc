// dsb-lease-bench: the coordinator's CPU per renew (docs/cluster-benchmarks.md).
//
// A Ledger (broker/lease/ledger.h) is driven by a fleet of simulated brokers on a
// fake clock: each broker renews every D/3 (requests interleaved, so N brokers
// send N requests per D/3), reports pool_held and applied the way a real agent
// does (B2), and applies every grant it gets (B1a). After each round a tenth of
// the brokers (at least one) change how many slots they want, so fair shares,
// grants and owed keep moving. The fleet is run past learning mode (C3) and one
// full silence period before anything is timed.
//
// What is timed: Ledger::OnRequest for one renew (plus a few stores into the
// request and the fake agent's bookkeeping, a few ns). Not timed: wire decoding,
// HMAC, syscalls; those are the same per request whatever the cluster size.
// Counters: renews_per_s = brokers / 5 (one renew per broker every D/3 = 5 s
// with the default D = 15 s) and core_pct = the share of one core the ledger
// needs at that rate (renews_per_s x CPU time per renew).
// Single-threaded; the seed is fixed (kSeed) and printed in each label.
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "broker/lease/ledger.h"
#include "broker/lease/messages.h"
#include "common/check.h"
#include "dsb/version.h"

namespace dsb::lease {
namespace {

constexpr std::uint64_t kSeed = 20240611;
constexpr Duration kTerm = std::chrono::seconds(15);    // D, the production default
constexpr Duration kDrain = std::chrono::seconds(120);  // H, the production default
// Pool slots per broker: with wanted uniform in [0, 2 * kPoolPerBroker] the
// fleet asks for about the whole pool, so shares are contended about half the time.
constexpr std::uint32_t kPoolPerBroker = 8;

// One simulated broker's lease agent, reduced to what the ledger sees.
struct FakeBroker {
  RenewRequest request;               // reused; ids and reports updated in place
  std::vector<std::uint32_t> lease;   // applied grant amount per target
  std::vector<std::uint32_t> wanted;  // demand above the floor per target
  std::uint64_t applied = 0;          // request id of the applied grant (B1a)
};

// A ledger and the brokers that talk to it, on a fake coordinator clock.
// Thread rule: one thread.
class Fleet {
 public:
  Fleet(std::size_t brokers, std::size_t targets)
      : rng_(kSeed),
        now_(TimePoint{} + std::chrono::hours(1)),
        step_((kTerm / 3) / static_cast<Duration::rep>(brokers)),
        ledger_(MakeConfig(brokers, targets), now_) {
    const std::uint32_t max_wanted = 2 * kPoolPerBroker;
    std::uniform_int_distribution<std::uint32_t> want(0, max_wanted);
    brokers_.resize(brokers);
    for (std::size_t i = 0; i < brokers; ++i) {
      FakeBroker& b = brokers_[i];
      b.request.broker_id = BrokerId(i);
      b.request.epoch = 1;
      b.lease.assign(targets, 0);
      for (std::size_t t = 0; t < targets; ++t) {
        b.wanted.push_back(want(rng_));
        b.request.targets.push_back({TargetName(t), 0, 0, 0, 0, 0});
      }
    }
  }

  // One renew from the next broker in turn; returns false if the ledger is
  // still learning (the reply carried no amounts).
  bool Renew() {
    FakeBroker& b = brokers_[cursor_];
    if (++cursor_ == brokers_.size()) {
      cursor_ = 0;
      ShiftDemand();
    }
    now_ += step_;
    b.request.request_id += 1;
    for (std::size_t t = 0; t < b.lease.size(); ++t) {
      TargetReport& r = b.request.targets[t];
      r.pool_held = std::min(b.wanted[t], b.lease[t]);
      r.held = r.pool_held;
      r.applied = b.applied;
      r.wanted = b.wanted[t];
      r.waiting = b.wanted[t] - r.pool_held;
    }
    auto reply = ledger_.OnRequest(now_, b.request);
    DSB_CHECK(reply.ok() && reply.value().has_value(), "renew of %s got no grant",
              b.request.broker_id.c_str());
    const Grant& g = *reply.value();
    if (g.learning) return false;
    b.applied = g.request_id;
    for (std::size_t t = 0; t < g.targets.size(); ++t) b.lease[t] = g.targets[t].amount;
    return true;
  }

  // Runs renews until learning mode is over and one more silence period has
  // passed, so every broker has a history of grants and acknowledgements.
  void WarmUp() {
    while (ledger_.Learning(now_)) Renew();
    const TimePoint until = now_ + ledger_.Silence();
    while (now_ < until) DSB_CHECK(Renew(), "learning after warm-up");
  }

  // C1 across the fleet: what the ledger says is owed never exceeds the pool.
  void CheckOwedWithinPool() const {
    for (std::size_t t = 0; t < ledger_.config().targets.size(); ++t) {
      std::uint64_t owed = 0;
      for (std::size_t i = 0; i < brokers_.size(); ++i) owed += ledger_.Owed(i, t, now_);
      DSB_CHECK(owed <= ledger_.config().targets[t].pool, "owed %llu above pool %u",
                static_cast<unsigned long long>(owed), ledger_.config().targets[t].pool);
    }
  }

  const Ledger& ledger() const { return ledger_; }
  TimePoint now() const { return now_; }

 private:
  static std::string BrokerId(std::size_t i) { return "ws" + std::to_string(i + 1); }
  static std::string TargetName(std::size_t t) { return "exch" + std::to_string(t + 1); }

  static LedgerConfig MakeConfig(std::size_t brokers, std::size_t targets) {
    LedgerConfig c;
    const auto pool = static_cast<std::uint32_t>(brokers) * kPoolPerBroker;
    for (std::size_t t = 0; t < targets; ++t) c.targets.push_back({TargetName(t), pool, 0});
    for (std::size_t i = 0; i < brokers; ++i) c.brokers.push_back({BrokerId(i), 1});
    c.term = kTerm;
    c.drain = kDrain;
    return c;
  }

  void ShiftDemand() {
    std::uniform_int_distribution<std::size_t> pick(0, brokers_.size() - 1);
    std::uniform_int_distribution<std::uint32_t> want(0, 2 * kPoolPerBroker);
    const std::size_t changes = std::max<std::size_t>(1, brokers_.size() / 10);
    for (std::size_t k = 0; k < changes; ++k) {
      FakeBroker& b = brokers_[pick(rng_)];
      for (auto& w : b.wanted) w = want(rng_);
    }
  }

  std::mt19937_64 rng_;
  TimePoint now_;
  Duration step_;
  Ledger ledger_;
  std::vector<FakeBroker> brokers_;
  std::size_t cursor_ = 0;
};

// CPU time of the calling thread (the benchmark's CPU column, read by hand so
// the coordinator budget can be printed as a counter).
Duration ThreadCpuTime() {
  timespec ts{};
  DSB_CHECK(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0, "clock_gettime failed");
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// Ledger::OnRequest per renew in steady state. Args: brokers, targets.
void BM_OnRequest(benchmark::State& state) {
  const auto brokers = static_cast<std::size_t>(state.range(0));
  const auto targets = static_cast<std::size_t>(state.range(1));
  Fleet fleet(brokers, targets);
  fleet.WarmUp();
  std::uint64_t learning_replies = 0;
  const Duration cpu_start = ThreadCpuTime();
  for (auto _ : state) {
    if (!fleet.Renew()) ++learning_replies;
  }
  const Duration cpu = ThreadCpuTime() - cpu_start;
  fleet.CheckOwedWithinPool();
  if (learning_replies != 0) state.SkipWithError("learning replies in steady state");
  // Every broker renews every D/3 (5 s by default): N / 5 renews per second.
  const double renews_per_s = static_cast<double>(brokers) / 5.0;
  const double cpu_per_renew_s =
      std::chrono::duration<double>(cpu).count() / static_cast<double>(state.iterations());
  state.counters["renews_per_s"] = renews_per_s;
  state.counters["core_pct"] = renews_per_s * cpu_per_renew_s * 100.0;
  state.SetLabel("seed=" + std::to_string(kSeed));
}
BENCHMARK(BM_OnRequest)
    ->ArgNames({"brokers", "targets"})
    ->ArgsProduct({{1, 20, 200, 1000}, {1, 4}});

// Ledger::Snapshot (what `dsbctl leases` asks for) on a steady fleet.
void BM_Snapshot(benchmark::State& state) {
  const auto brokers = static_cast<std::size_t>(state.range(0));
  const auto targets = static_cast<std::size_t>(state.range(1));
  Fleet fleet(brokers, targets);
  fleet.WarmUp();
  std::size_t lines = 0;
  for (auto _ : state) {
    LedgerSnapshot s = fleet.ledger().Snapshot(fleet.now());
    lines = s.targets.size() * s.targets.front().brokers.size();
    benchmark::DoNotOptimize(s);
  }
  DSB_CHECK(lines == brokers * targets, "snapshot has %zu lines", lines);
}
BENCHMARK(BM_Snapshot)->ArgNames({"brokers", "targets"})->ArgsProduct({{20, 200}, {1, 4}});

}  // namespace
}  // namespace dsb::lease

// BENCHMARK_MAIN, plus --version.
int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::printf("dsb-lease-bench %s\n", DSB_VERSION_STRING);
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
