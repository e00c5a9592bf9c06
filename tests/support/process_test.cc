// The test-support library itself: Process, PortReservation, ScratchDir.
#include "tests/support/process.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <vector>

#include "tests/support/ports.h"
#include "tests/support/scratch_dir.h"

namespace dsb::testing {
namespace {

using namespace std::chrono_literals;

TEST(Process, CapturesOutputAndExitCode) {
  Process p;
  ASSERT_TRUE(p.Start({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"})) << p.error();
  const auto status = p.Wait(20s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(p.exit_code(), 3);
  EXPECT_NE(p.output().find("out\n"), std::string::npos) << p.output();
  EXPECT_NE(p.output().find("err\n"), std::string::npos) << p.output();
  EXPECT_FALSE(p.running());
}

TEST(Process, FindsProgramsInPathAndAddsEnvironment) {
  SpawnOptions o;
  o.env = {"DSB_PROCESS_TEST=seen", "HOME=/nonexistent-home"};
  const Outcome r = RunProgram({"sh", "-c", "echo \"$DSB_PROCESS_TEST $HOME\""}, 20s, o);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "seen /nonexistent-home\n");
}

TEST(Process, StdinIsEmpty) {
  const Outcome r = RunProgram({"/bin/sh", "-c", "cat; echo end"}, 20s);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "end\n");
}

TEST(Process, SaysWhyAProgramCannotStart) {
  Process p;
  EXPECT_FALSE(p.Start({"/nonexistent/dsb-program"}));
  EXPECT_NE(p.error().find("/nonexistent/dsb-program"), std::string::npos) << p.error();
  EXPECT_FALSE(p.running());
  const Outcome r = RunProgram({"no-such-dsb-program-anywhere"}, 5s);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_NE(r.output.find("cannot find program"), std::string::npos) << r.output;
}

TEST(Process, WritesOutputToFiles) {
  ScratchDir dir("dsb-process-test");
  ASSERT_TRUE(dir.ok());
  Process p;
  ASSERT_TRUE(p.Start({"/bin/sh", "-c", "echo one; echo two >&2"}, dir.File("out"),
                      dir.File("err")))
      << p.error();
  ASSERT_TRUE(p.Wait(20s).has_value());
  EXPECT_EQ(ReadFile(dir.File("out")), "one\n");
  EXPECT_EQ(ReadFile(dir.File("err")), "two\n");

  SpawnOptions o;
  o.output = Output::kFiles;
  o.stdout_file = o.stderr_file = dir.path() / "both";
  o.append = true;
  for (int i = 0; i < 2; ++i) {
    const Outcome r = RunProgram({"/bin/sh", "-c", "echo a; echo b >&2"}, 20s, o);
    EXPECT_EQ(r.exit_code, 0);
  }
  EXPECT_EQ(ReadFile(dir.path() / "both"), "a\nb\na\nb\n");
}

TEST(Process, WaitReturnsAtTheDeadlineAndKillEndsTheChild) {
  Process p;
  ASSERT_TRUE(p.Start({"/bin/sleep", "60"})) << p.error();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.Wait(100ms).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
  EXPECT_TRUE(p.running());
  EXPECT_TRUE(p.Signal(SIGSTOP));
  p.Kill();  // SIGKILL reaches a stopped child too
  EXPECT_FALSE(p.running());
  EXPECT_EQ(p.exit_code(), 128 + SIGKILL);
  EXPECT_FALSE(p.Signal(SIGTERM)) << "a reaped child is never signalled";
}

TEST(Process, StopSendsTheSignalThenWaits) {
  Process p;
  ASSERT_TRUE(p.Start({"/bin/sh", "-c", "trap 'echo bye; exit 7' TERM; echo up; "
                                        "while :; do sleep 0.05; done"}))
      << p.error();
  ASSERT_TRUE(p.WaitForOutput("up", 20s)) << p.output();
  EXPECT_EQ(p.Stop(SIGTERM, 20s), 7);
  EXPECT_NE(p.output().find("bye"), std::string::npos) << p.output();
}

TEST(Process, WaitForOutputFailsAtTheEndOfOutput) {
  Process p;
  ASSERT_TRUE(p.Start({"/bin/sh", "-c", "echo nothing-useful"})) << p.error();
  EXPECT_FALSE(p.WaitForOutput("never printed", 20s));
  EXPECT_TRUE(p.WaitForOutputEnd(20s));
}

TEST(Process, AGroupLeaderTakesItsChildrenAlong) {
  SpawnOptions o;
  o.new_process_group = true;
  Process p;
  ASSERT_TRUE(p.Start({"/bin/sh", "-c", "sleep 60 & echo $!; wait"}, o)) << p.error();
  ASSERT_TRUE(p.WaitForOutput("\n", 20s));
  const pid_t grandchild = std::stoi(p.output());
  // Not our child, but a pidfd still tells us when it ends (Linux >= 5.3).
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, grandchild, 0));
  ASSERT_GE(pidfd, 0) << "pidfd_open(" << grandchild << "): " << std::strerror(errno);
  p.Kill();
  // The grandchild got the group's SIGKILL: its pidfd becomes readable when it ends.
  pollfd pfd{pidfd, POLLIN, 0};
  const int ready = ::poll(&pfd, 1, 20000);
  ::close(pidfd);
  EXPECT_EQ(ready, 1) << "grandchild " << grandchild << " outlived its group";
}

TEST(Process, AChildDiesWithTheThreadThatStartedIt) {
  Process p;
  std::thread starter([&p] { ASSERT_TRUE(p.Start({"/bin/sleep", "60"})) << p.error(); });
  starter.join();  // PR_SET_PDEATHSIG: the thread's end kills the child
  ASSERT_TRUE(p.Wait(20s).has_value());
  EXPECT_EQ(p.exit_code(), 128 + SIGKILL);
}

TEST(Process, OutlivesItsStarterWhenAsked) {
  SpawnOptions o;
  o.die_with_parent = false;
  Process p;
  std::thread starter([&] { ASSERT_TRUE(p.Start({"/bin/sleep", "60"}, o)) << p.error(); });
  starter.join();
  EXPECT_FALSE(p.Wait(200ms).has_value());
  p.Kill();
}

// The reservation keeps others off the port but lets a SO_REUSEADDR listener (the child) in.
TEST(PortReservation, HoldsThePortForAReuseAddrListenerOnly) {
  PortReservation r;
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.address(), "127.0.0.1:" + std::to_string(r.port()));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(r.port());
  auto bind_socket = [&](bool reuse) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    if (reuse) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    return std::make_pair(fd, ok);
  };
  auto [plain, plain_bound] = bind_socket(false);
  EXPECT_FALSE(plain_bound) << "a socket without SO_REUSEADDR took a reserved port";
  ::close(plain);
  auto [child, child_bound] = bind_socket(true);
  EXPECT_TRUE(child_bound) << "the child could not bind its reserved port";
  EXPECT_EQ(::listen(child, 4), 0);
  ::close(child);
  r.Release();
  auto [after, after_bound] = bind_socket(false);
  EXPECT_TRUE(after_bound) << "the port stayed taken after Release";
  ::close(after);
}

TEST(PortReservation, TwoReservationsNeverShareAPort) {
  std::vector<PortReservation> held(50);
  std::vector<std::uint16_t> ports;
  for (const PortReservation& r : held) {
    ASSERT_TRUE(r.ok()) << r.error();
    ports.push_back(r.port());
  }
  std::sort(ports.begin(), ports.end());
  EXPECT_EQ(std::adjacent_find(ports.begin(), ports.end()), ports.end());
}

TEST(ScratchDir, IsPrivateAndRemovedAfterAPassingTest) {
  std::filesystem::path path;
  {
    ScratchDir dir("dsb-scratch-test");
    ASSERT_TRUE(dir.ok());
    path = dir.path();
    std::ofstream(dir.File("f")) << "x";
    EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_all);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace dsb::testing
