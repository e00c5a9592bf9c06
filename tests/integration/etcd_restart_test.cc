// Brokers whose ledger is one etcd member (ledger = "etcd": no coordinator broker at all), with
// dsb-simserver as the judge of S:
//   - capacity moves between brokers: broker A loaded, then idle, broker B loaded: B's lease
//     rises to the pool; then A and the third broker are killed and B still renews (no broker
//     is needed by another);
//   - a broker kill -9'd and restarted: the new instance is not accepted while the old one's
//     live key still exists in etcd (R4: the pool cannot fund both), it is accepted once the
//     key expired, and S holds at the server; a clean stop (SIGTERM) sends the goodbye (R5), so
//     its successor is accepted while the stopped instance's live key still exists.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/etcd_world.h"
#include "tests/integration/etcd_world_start.h"
#include "tests/support/wait.h"

namespace dsb::etcdit {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long long Ms(Clock::duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

bool Contains(const std::vector<std::string>& keys, const std::string& key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

TEST(EtcdRestart, CapacityMovesBetweenBrokersWithNoCoordinatorBroker) {
  WorldSpec spec;
  spec.members = 1;
  spec.brokers = 3;
  spec.limit = 24;  // pool 24 - 3 x 1 = 21
  spec.stem = "em" + std::to_string(::getpid());
  EtcdWorld w;
  if (!StartOrSkip(w, spec)) return;
  const int pool = w.pool();

  testing::Process* a = w.StartLoad(0, 1, 32, 120);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(testing::WaitUntil([&] { return w.Agent(0).lease >= pool - 1; }, 60s))
      << "ws1 never got the pool\n" << w.Dump(true);
  std::printf("ws1 loaded: lease %lld of pool %d\n", static_cast<long long>(w.Agent(0).lease),
              pool);
  a->Signal(SIGTERM);  // ws1 goes idle: its DigiScope closes what it holds and ends
  ASSERT_TRUE(a->Wait(30s).has_value()) << "ws1's load did not end";

  const auto start = Clock::now();
  ASSERT_NE(w.StartLoad(1, 1, 32, 300), nullptr);  // ended by StopLoads below
  ASSERT_TRUE(testing::WaitUntil([&] { return w.Agent(1).lease >= pool - 1; }, 60s))
      << "the pool never moved to ws2\n" << w.Dump(true);
  const auto moved = Clock::now() - start;
  ASSERT_TRUE(testing::WaitUntil([&] { return w.Agent(0).lease == 0; }, 30s)) << w.Dump(true);
  std::printf("pool moved from ws1 to ws2 through etcd in %lld ms (ws2 lease %lld of %d; "
              "renew interval D/3 = %lld ms)\n",
              Ms(moved), static_cast<long long>(w.Agent(1).lease), pool,
              static_cast<long long>(spec.term.count() / 3));

  // No broker serves the others: with ws1 and ws3 dead, ws2 still renews through etcd.
  w.broker(0).Stop(SIGKILL);
  w.broker(2).Stop(SIGKILL);
  std::string applied = w.Agent(1).applied;
  int renews = 0;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const AgentTarget b = w.Agent(1);
        if (b.ok && b.applied != applied) {
          applied = b.applied;
          ++renews;
        }
        return renews >= 3 && b.lease > 0;
      },
      30s))
      << "ws2 stopped renewing when the other brokers died\n" << w.broker(1).log();
  w.StopLoads();
  const double peak = w.ServerPeak();
  std::printf("server: peak %.0f of limit %d\n", peak, spec.limit);
  EXPECT_GT(peak, pool / 2);
  EXPECT_LE(peak, spec.limit) << "S broken at the server";
}

TEST(EtcdRestart, KilledBrokerIsAcceptedAgainOnlyWhenItsOldInstanceIsSilent) {
  WorldSpec spec;
  spec.members = 1;
  spec.brokers = 3;
  spec.limit = 12;
  spec.floor = 2;  // the floors 3 x (1 + 2) = 9; pool 3: it cannot fund two instances of ws3
  // A long H makes the live key's TTL ((D + H)(1 + eps), rounded up: 10 s) long against a
  // restart, so "accepted while the old key exists" and "after it expired" are far apart.
  spec.drain = 8000ms;
  spec.stem = "em" + std::to_string(::getpid());
  EtcdWorld w;
  if (!StartOrSkip(w, spec)) return;
  testing::Process* loads[3] = {};
  for (int i = 0; i < 3; ++i) {
    loads[i] = w.StartLoad(i, 1, 8, 240);
    ASSERT_NE(loads[i], nullptr);
  }
  ASSERT_TRUE(testing::WaitUntil([&] { return w.AllLeased(); }, 60s)) << w.Dump(true);

  // kill -9: the old instance's live key stays until its etcd lease expires.
  const AgentTarget old1 = w.Agent(2);
  const std::string old_key = "live/ws3/" + old1.epoch + "/" + old1.instance;
  const auto keys_before = w.Keys("live/");
  ASSERT_TRUE(keys_before.has_value());
  ASSERT_TRUE(Contains(*keys_before, old_key)) << "no live key " << old_key << "\n" << w.Dump(true);
  const auto killed = Clock::now();
  w.broker(2).Stop(SIGKILL);
  ASSERT_TRUE(w.broker(2).Start()) << w.broker(2).log();
  bool old_key_at_acceptance = true;
  std::string new_epoch;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        // Status first, then etcd: a key seen after the acceptance existed at it.
        const AgentTarget n = w.Agent(2);
        if (!n.ok || n.epoch == old1.epoch || n.verdict != "accepted") return false;
        const auto keys = w.Keys("live/ws3/");
        if (!keys) return false;
        old_key_at_acceptance = Contains(*keys, old_key);
        new_epoch = n.epoch;
        return true;
      },
      90s))
      << "the restarted ws3 was never accepted\n" << w.Dump(true) << w.broker(2).log();
  std::printf("ws3 kill -9'd and restarted (epoch %s -> %s): accepted %lld ms after the kill; "
              "old live key %s then\n",
              old1.epoch.c_str(), new_epoch.c_str(), Ms(Clock::now() - killed),
              old_key_at_acceptance ? "STILL PRESENT" : "expired");
  EXPECT_FALSE(old_key_at_acceptance)
      << "a second instance of ws3 was accepted while the first could still hold its share "
         "(R2/R4: the pool of 3 cannot fund both)";
  // ws1 and ws2 still get grants (whether ws3's load was adopted by the new instance or not).
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const AgentTarget a = w.Agent(0), b = w.Agent(1);
        return a.lease > 0 && b.lease > 0;
      },
      60s))
      << w.Dump(true);

  // A clean stop: ws3's load ends first (nothing held to hand over), then SIGTERM: the goodbye
  // tells the ledger to stop counting the instance, so the next one fits at once.
  if (loads[2]->alive()) loads[2]->Signal(SIGTERM);
  ASSERT_TRUE(loads[2]->Wait(30s).has_value());
  ASSERT_TRUE(testing::WaitUntil([&] { return w.Agent(2).held == 0; }, 30s)) << w.Dump(true);
  const AgentTarget old2 = w.Agent(2);
  const std::string old2_key = "live/ws3/" + old2.epoch + "/" + old2.instance;
  const auto stopped = Clock::now();
  const int status = w.broker(2).Stop(SIGTERM);
  EXPECT_EQ(testing::ExitCodeOf(status), 0) << w.broker(2).log();
  const std::string stop_log = w.broker(2).log();
  ASSERT_TRUE(w.broker(2).Start()) << w.broker(2).log();
  bool old2_key_at_acceptance = false;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const AgentTarget n = w.Agent(2);
        if (!n.ok || n.epoch == old2.epoch || n.verdict != "accepted") return false;
        const auto keys = w.Keys("live/ws3/");
        if (!keys) return false;
        old2_key_at_acceptance = Contains(*keys, old2_key);
        return true;
      },
      90s))
      << "ws3 was never accepted after a clean restart\n" << w.Dump(true) << w.broker(2).log();
  std::printf("ws3 stopped with SIGTERM and restarted: accepted %lld ms after the stop; the "
              "stopped instance's live key %s then\n",
              Ms(Clock::now() - stopped), old2_key_at_acceptance ? "still present" : "expired");
  EXPECT_TRUE(old2_key_at_acceptance)
      << "the successor waited for the stopped instance's live key to expire: the goodbye "
         "(R5) did not reach the ledger; the stopped broker's last lines:\n"
      << stop_log.substr(stop_log.size() > 3000 ? stop_log.size() - 3000 : 0);

  w.StopLoads();
  const double peak = w.ServerPeak();
  std::printf("server: peak %.0f of limit %d\n", peak, spec.limit);
  EXPECT_GT(peak, 0);
  EXPECT_LE(peak, spec.limit) << "S broken at the server";
}

}  // namespace
}  // namespace dsb::etcdit
