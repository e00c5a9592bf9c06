// Chaos: DigiScope-like client processes, each registered with a real broker,
// take slots and open real sessions on dsb-simserver; random ones are killed
// with SIGKILL at random moments and replaced. The server (started with a cap
// far above the target's limit, so it measures rather than enforces) must
// never see more sessions than the limit at once, and after quiesce every slot
// is free again. The target's quarantine (1 s) covers the time the server
// needs to notice a dead client's connections, as it does for Exchange.
//
// DSB_CHAOS_SECONDS (default 4) sets the length; the seed is printed
// (DSB_CHAOS_SEED replays the kill schedule).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <random>

#include "common/local_frame.h"
#include "dsb/client.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/tools/process.h"
#include "tests/tools/sim_server_process.h"
#include "tools/load/line_client.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

constexpr int kLimit = 12;

std::uint64_t EnvOr(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

// One DigiScope-like process: system session, then threads that loop
// acquire -> open -> hold -> close -> release until killed. Reports progress
// through `progress` (shared anonymous memory) so the parent can kill it at a
// random point of its work.
[[noreturn]] void ClientMain(const std::string& socket, const std::string& server,
                             std::atomic<std::uint64_t>* progress) {
  ClientOptions o;
  o.socket_path = socket;
  o.target = "exch01";
  o.name = "chaos";
  std::error_code ec;
  auto client = Client::Connect(o, ec);
  if (!client) _exit(3);
  load::LineClient system;
  if (system.Connect(server, 5000ms) || system.Call("OPEN svc", ec).rfind("OK", 0) != 0) _exit(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(::getpid() * 7 + t));
      load::LineClient c;
      if (c.Connect(server, 5000ms)) return;
      for (;;) {
        std::error_code e;
        Permit p = client->Acquire(200ms, e);
        progress->fetch_add(1);
        if (e) continue;
        const std::string reply = c.Call("OPEN svc", e);
        if (e) return;
        if (reply.rfind("OK ", 0) == 0) {
          for (auto spin = rng() % 20000; spin > 0; --spin) progress->fetch_add(0);
          c.Call("CLOSE " + reply.substr(3), e);
          if (e) return;
        }
        progress->fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  _exit(0);
}

TEST(Chaos, KilledClientsNeverPushTheServerOverTheLimitAndLeakNothing) {
  const std::uint64_t seed = EnvOr("DSB_CHAOS_SEED", std::random_device{}());
  const auto seconds = std::chrono::seconds(EnvOr("DSB_CHAOS_SECONDS", 4));
  std::printf("chaos: seed %llu (replay with DSB_CHAOS_SEED), %lld s\n",
              static_cast<unsigned long long>(seed), static_cast<long long>(seconds.count()));
  std::mt19937_64 rng(seed);
  tools_test::ScratchDir dir;
  const std::filesystem::path folder = std::filesystem::path(dir.File("")).parent_path();
  testing::BrokerProcess broker(folder, "chaos" + std::to_string(::getpid()),
                                {testing::BrokerTarget{"exch01", kLimit, 0, "1s"}});
  ASSERT_TRUE(broker.Start()) << broker.log();
  tools_test::SimServerProcess server(dir, {"--limit", "1000"});
  ASSERT_TRUE(server.ok());

  auto* progress = static_cast<std::atomic<std::uint64_t>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(progress, MAP_FAILED);
  constexpr int kClients = 4;
  std::vector<pid_t> pids(kClients);
  auto spawn = [&](int i) {
    progress[i].store(0);
    const pid_t pid = ::fork();
    if (pid == 0) ClientMain(broker.socket().string(), server.address(), &progress[i]);
    pids[static_cast<std::size_t>(i)] = pid;
  };
  for (int i = 0; i < kClients; ++i) spawn(i);

  int kills = 0;
  const auto end = std::chrono::steady_clock::now() + seconds;
  while (std::chrono::steady_clock::now() < end) {
    const int victim = static_cast<int>(rng() % kClients);
    const std::uint64_t target = progress[victim].load() + 1 + rng() % 200;
    while (progress[victim].load() < target && std::chrono::steady_clock::now() < end) {
      std::this_thread::yield();
    }
    ::kill(pids[static_cast<std::size_t>(victim)], SIGKILL);
    ::waitpid(pids[static_cast<std::size_t>(victim)], nullptr, 0);
    ++kills;
    spawn(victim);
  }
  for (pid_t pid : pids) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  // Quiesce: every slot comes back once the quarantine of the last kills ends.
  auto held_and_free = [&] {
    json::object r = testing::AskBroker(broker.socket(), local_protocol::Op::kStatus);
    if (r.empty()) return std::pair<std::int64_t, std::int64_t>{-1, -1};
    const auto& t = r.at("targets").as_array()[0].as_object();
    return std::pair{t.at("held").to_number<std::int64_t>(), t.at("free").to_number<std::int64_t>()};
  };
  EXPECT_TRUE(tools_test::WaitUntil([&] { return held_and_free() == std::pair<std::int64_t, std::int64_t>{0, kLimit}; }, 20s))
      << "slots leaked: held/free = " << held_and_free().first << "/" << held_and_free().second;
  const auto stats = server.UserStats("svc");
  std::printf("kills %d, sessions opened %.0f, server peak %.0f (limit %d)\n", kills,
              tools_test::Num(stats, "opened"), tools_test::Num(stats, "peak"), kLimit);
  EXPECT_GT(kills, 0);
  EXPECT_GT(tools_test::Num(stats, "opened"), 0);
  EXPECT_LE(tools_test::Num(stats, "peak"), kLimit) << "S broken at the server";
  ::munmap(progress, 4096);
}

}  // namespace
}  // namespace dsb
