// ParseLimitOutput (what a limit_command may print) and RunLimitCommand with a
// real /bin/sh on a real io_context: answers, garbage, failing commands, a
// command that hangs (killed with its whole process group), huge output.
#include "broker/limit_command.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/wait.h"

namespace dsb::broker {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct ParseCase {
  std::string out;
  std::optional<std::uint32_t> want;  // nullopt: refused
};

TEST(ParseLimitOutput, AcceptsOneIntegerInRangeWithSurroundingWhitespaceOnly) {
  const std::vector<ParseCase> cases = {
      {"12", 12},
      {"12\n", 12},
      {"  12 \r\n", 12},
      {"\t\n 7\n\n", 7},
      {"1", 1},
      {"65535", 65535},
      {"00012", 12},
      {"", std::nullopt},
      {"   \n", std::nullopt},
      {"0", std::nullopt},
      {"65536", std::nullopt},
      {"-1", std::nullopt},
      {"-12", std::nullopt},
      {"+12", std::nullopt},
      {"99999999999999999999", std::nullopt},
      {"4294967308", std::nullopt},  // 2^32 + 12: must not wrap to 12
      {"12 13", std::nullopt},
      {"12\n13\n", std::nullopt},
      {"1 2", std::nullopt},
      {"12abc", std::nullopt},
      {"0x0c", std::nullopt},
      {"12.0", std::nullopt},
      {"twelve", std::nullopt},
      {"Maximum Allowed Sessions Per User: 12", std::nullopt},
      {std::string("12\0", 3), std::nullopt},
      {"\x01" "12", std::nullopt},
  };
  for (const ParseCase& c : cases) {
    SCOPED_TRACE("output: \"" + c.out + "\"");
    const Result<std::uint32_t> r = ParseLimitOutput(c.out);
    if (c.want) {
      ASSERT_TRUE(r.ok()) << r.status().message();
      EXPECT_EQ(r.value(), *c.want);
    } else {
      ASSERT_FALSE(r.ok()) << "accepted as " << r.value();
      EXPECT_EQ(r.status().code(), Errc::kInvalidArgument);
      EXPECT_NE(r.status().message().find("between 1 and 65535"), std::string::npos)
          << r.status().message();
    }
  }
}

TEST(ParseLimitOutput, RefusalQuotesWhatWasPrintedWithControlBytesEscaped) {
  const Result<std::uint32_t> r = ParseLimitOutput("cap\x01\x1b[31m=12\n");
  ASSERT_FALSE(r.ok());
  const std::string m = r.status().message();
  EXPECT_NE(m.find("cap"), std::string::npos) << m;
  EXPECT_NE(m.find("\\x01"), std::string::npos) << m;
  EXPECT_NE(m.find("\\x1b"), std::string::npos) << m;
  for (char c : m) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte " << static_cast<int>(c) << " in: " << m;
  }
  // Long garbage is cut, not copied whole into a log line.
  const Result<std::uint32_t> long_r = ParseLimitOutput(std::string(10000, 'x'));
  ASSERT_FALSE(long_r.ok());
  EXPECT_LT(long_r.status().message().size(), 400u) << long_r.status().message();
}

// Runs `command` on a fresh io_context and returns what the callback got,
// with the wall time it took. Fails the test if the callback never comes or
// comes twice.
struct RunOutcome {
  std::optional<Result<std::uint32_t>> result;
  int calls = 0;
  std::chrono::milliseconds took{0};
};

RunOutcome RunCommand(const std::string& command, std::chrono::nanoseconds timeout) {
  boost::asio::io_context io;
  RunOutcome out;
  const auto start = Clock::now();
  RunLimitCommand(io.get_executor(), command, timeout, [&](Result<std::uint32_t> r) {
    ++out.calls;
    out.result = std::move(r);
  });
  // run() returns once the command's pipes, timers and reaping are done.
  io.run_for(20s);
  out.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  EXPECT_EQ(out.calls, 1) << "callback must run exactly once (command: " << command << ")";
  EXPECT_TRUE(io.stopped()) << "work left on the io_context after the answer";
  return out;
}

class ScratchFolder {
 public:
  ScratchFolder() {
    std::string t = (std::filesystem::temp_directory_path() / "dsb-lc-XXXXXX").string();
    if (::mkdtemp(t.data()) != nullptr) path_ = t;
  }
  ~ScratchFolder() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// True once `pid` is no process or only a zombie (dead, waiting for a reaper:
// in a container PID 1 may reap late or never).
bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

TEST(RunLimitCommand, ReturnsWhatTheCommandPrints) {
  const RunOutcome o = RunCommand("echo 12", 5s);
  ASSERT_TRUE(o.result.has_value());
  ASSERT_TRUE(o.result->ok()) << o.result->status().message();
  EXPECT_EQ(o.result->value(), 12u);
}

TEST(RunLimitCommand, StderrAloneDoesNotSpoilAGoodAnswer) {
  const RunOutcome o = RunCommand("echo warming up >&2; printf ' 30\\n'", 5s);
  ASSERT_TRUE(o.result->ok()) << o.result->status().message();
  EXPECT_EQ(o.result->value(), 30u);
}

TEST(RunLimitCommand, GarbageIsInvalidArgumentNamingTheOutput) {
  const RunOutcome o = RunCommand("echo 'no cap here'", 5s);
  ASSERT_FALSE(o.result->ok());
  EXPECT_EQ(o.result->status().code(), Errc::kInvalidArgument);
  EXPECT_NE(o.result->status().message().find("no cap here"), std::string::npos)
      << o.result->status().message();
}

TEST(RunLimitCommand, NonZeroExitNamesTheStatusAndTheFirstStderrLine) {
  const RunOutcome o = RunCommand("echo 12; echo 'psql: connection refused' >&2; echo more >&2; exit 3",
                           5s);
  ASSERT_FALSE(o.result->ok());
  EXPECT_EQ(o.result->status().code(), Errc::kInternal);
  const std::string m = o.result->status().message();
  EXPECT_NE(m.find("status 3"), std::string::npos) << m;
  EXPECT_NE(m.find("psql: connection refused"), std::string::npos) << m;
  EXPECT_EQ(m.find("more"), std::string::npos) << "only the first stderr line: " << m;
}

TEST(RunLimitCommand, MissingProgramIsAFailureNotACrash) {
  const RunOutcome o = RunCommand("/nonexistent/dsb-limit-script", 5s);
  ASSERT_FALSE(o.result->ok());
  EXPECT_EQ(o.result->status().code(), Errc::kInternal);
  EXPECT_NE(o.result->status().message().find("status 127"), std::string::npos)
      << o.result->status().message();
}

TEST(RunLimitCommand, KilledBySignalIsNamed) {
  const RunOutcome o = RunCommand("kill -TERM $$", 5s);
  ASSERT_FALSE(o.result->ok());
  EXPECT_NE(o.result->status().message().find("signal 15"), std::string::npos)
      << o.result->status().message();
}

TEST(RunLimitCommand, HangingCommandIsKilledWithItsWholeProcessGroup) {
  ScratchFolder dir;
  const std::string pids = dir.File("pids");
  // The shell writes its own pid and that of a grandchild (sleep), then waits:
  // both must be gone after the timeout.
  const RunOutcome o =
      RunCommand("echo $$ > " + pids + "; sleep 30 & echo $! >> " + pids + "; wait", 200ms);
  ASSERT_TRUE(o.result.has_value());
  ASSERT_FALSE(o.result->ok());
  EXPECT_EQ(o.result->status().code(), Errc::kTimeout) << o.result->status().message();
  EXPECT_NE(o.result->status().message().find("killed"), std::string::npos)
      << o.result->status().message();
  EXPECT_GE(o.took, 200ms);
  EXPECT_LT(o.took, 5s) << "the timeout did not end the command promptly";
  std::printf("sleep 30 with a 200 ms timeout answered after %lld ms\n",
              static_cast<long long>(o.took.count()));
  std::ifstream in(pids);
  pid_t shell = 0, sleeper = 0;
  in >> shell >> sleeper;
  ASSERT_GT(shell, 1) << "the command did not record its pid";
  ASSERT_GT(sleeper, 1) << "the command did not record its child's pid";
  EXPECT_TRUE(ProcessGone(shell)) << "shell pid " << shell << " still exists";
  // The grandchild is reaped by init, asynchronously: wait for it.
  EXPECT_TRUE(dsb::testing::WaitUntil([&] { return ProcessGone(sleeper); }, 3000ms))
      << "sleep pid " << sleeper << " survived the timeout: the process group was not killed";
}

TEST(RunLimitCommand, ChildThatClosesItsOutputButKeepsRunningIsStillBoundedByTheTimeout) {
  // stdout and stderr closed at once; the shell lives on. Reaping must not
  // wait for it beyond the timeout.
  const RunOutcome o = RunCommand("exec >/dev/null 2>&1; sleep 30", 300ms);
  ASSERT_FALSE(o.result->ok());
  EXPECT_EQ(o.result->status().code(), Errc::kTimeout) << o.result->status().message();
  EXPECT_LT(o.took, 5s);
}

// The shell printed its answer and exited; a child it left in the background
// holds the output open. The answer is the shell's, within ~100 ms, and the
// child is ended with the group.
TEST(RunLimitCommand, ABackgroundChildHoldingTheOutputDoesNotHideTheAnswer) {
  ScratchFolder dir;
  const std::string pid_file = dir.File("bg");
  const RunOutcome o = RunCommand("echo 12; sleep 30 & echo $! > " + pid_file, 5s);
  ASSERT_TRUE(o.result.has_value());
  ASSERT_TRUE(o.result->ok()) << o.result->status().message();
  EXPECT_EQ(o.result->value(), 12u);
  EXPECT_LT(o.took, 3s) << "waited for the background child instead of the shell";
  pid_t bg = 0;
  std::ifstream(pid_file) >> bg;
  ASSERT_GT(bg, 1);
  EXPECT_TRUE(dsb::testing::WaitUntil([&] { return ProcessGone(bg); }, 3000ms))
      << "background child " << bg << " survived";
}

// Kill() (the broker stops) ends a running command at once, whatever its timeout.
TEST(RunLimitCommand, KillEndsARunningCommandAtOnce) {
  boost::asio::io_context io;
  std::optional<Result<std::uint32_t>> result;
  const auto start = Clock::now();
  auto run = RunLimitCommand(io.get_executor(), "sleep 60; echo 12", 10min,
                             [&](Result<std::uint32_t> r) { result = std::move(r); });
  ASSERT_NE(run, nullptr);
  boost::asio::steady_timer t(io);
  t.expires_after(100ms);
  t.async_wait([&](boost::system::error_code) { run->Kill(); });
  io.run_for(20s);
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok());
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(RunLimitCommand, OutputOverFourKibIsCutAndRefusedWithoutACrash) {
  // 1 MB of digits: kept to 4 KiB, read to EOF, refused as garbage.
  const RunOutcome o = RunCommand("head -c 1000000 /dev/zero | tr '\\0' 7; echo; echo err >&2", 10s);
  ASSERT_FALSE(o.result->ok());
  EXPECT_EQ(o.result->status().code(), Errc::kInvalidArgument);
  EXPECT_LT(o.result->status().message().size(), 400u);
  // And a huge stderr on a failing command.
  const RunOutcome e = RunCommand("head -c 1000000 /dev/zero | tr '\\0' e >&2; exit 1", 10s);
  ASSERT_FALSE(e.result->ok());
  EXPECT_NE(e.result->status().message().find("status 1"), std::string::npos);
  EXPECT_LT(e.result->status().message().size(), 400u);
}

TEST(RunLimitCommand, StdinIsDevNull) {
  // A command that reads stdin must not hang on the broker's terminal.
  const RunOutcome o = RunCommand("read x; echo ${x:-5}", 5s);
  ASSERT_TRUE(o.result->ok()) << o.result->status().message();
  EXPECT_EQ(o.result->value(), 5u);
}

}  // namespace
}  // namespace dsb::broker
