// Issue 11: SIGHUP reopens the log file (logrotate: rename, then HUP; the new
// file gets the lines) and reloads the broker file: what is safe is applied,
// what needs a restart is logged at warn, an invalid file changes nothing.
// The real dsb-broker; waits on its log, never on time.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/broker_process.h"
#include "tests/support/process.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".new";
  std::ofstream(tmp, std::ios::trunc) << text;
  fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write);
  fs::rename(tmp, p);  // as an editor saves: the broker never reads half a file
}

bool FileHas(const fs::path& p, const std::string& needle,
             milliseconds timeout = milliseconds(20000)) {
  return WaitUntil([&] { return ReadAll(p).find(needle) != std::string::npos; }, timeout);
}

std::string BrokerFile(const fs::path& dir, const std::string& prefix, const std::string& extra,
                       int limit = 8) {
  return "[broker]\nid = \"" + prefix + "\"\nsocket = \"" + (dir / "dsb.sock").string() +
         "\"\nshm_prefix = \"" + prefix + "\"\n" + extra +
         "\n[[targets]]\nname = \"exch01\"\nlimit = " + std::to_string(limit) + "\n";
}

TEST(Reload, SighupAfterARenameWritesToANewLogFileAndAppliesTheLogLevel) {
  ScratchDir dir("dsb-reload");
  const std::string prefix = UniqueName("rl").substr(0, 16);
  const fs::path log = dir.path() / "logs" / "broker.log";
  const std::string log_key = "log_file = \"" + log.string() + "\"\n";
  const fs::path config = dir.path() / "broker.toml";
  WriteAll(config, BrokerFile(dir.path(), prefix, log_key));
  Process broker;
  ASSERT_TRUE(broker.Start({BinPath("dsb-broker"), "--config", config.string()}))
      << broker.error();
  ASSERT_TRUE(FileHas(log, " ready on ")) << ReadAll(log) << broker.output();

  // logrotate: rename, then HUP.
  const fs::path rotated = log.string() + ".1";
  fs::rename(log, rotated);
  ASSERT_TRUE(broker.Signal(SIGHUP));
  ASSERT_TRUE(FileHas(log, "log file reopened: " + log.string())) << ReadAll(rotated);
  EXPECT_TRUE(FileHas(log, "reload of " + config.string() + ": no change")) << ReadAll(log);
  EXPECT_THAT(ReadAll(rotated), HasSubstr(" ready on "));
  EXPECT_THAT(ReadAll(rotated), Not(HasSubstr("log file reopened")));

  // log_level = "warn": applied (said at info, before the switch), and from
  // then on info lines are gone while warnings still come.
  WriteAll(config, BrokerFile(dir.path(), prefix, log_key + "log_level = \"warn\"\n"));
  ASSERT_TRUE(broker.Signal(SIGHUP));
  ASSERT_TRUE(FileHas(log, "applied: log_level: info -> warn")) << ReadAll(log);
  // A change that needs a restart is a warning: it still shows; the info
  // line that every reload starts with no longer does.
  WriteAll(config, BrokerFile(dir.path(), prefix, log_key + "log_level = \"warn\"\n", 9));
  const std::size_t reopen_lines_before = [&] {
    const std::string t = ReadAll(log);
    std::size_t n = 0;
    for (std::size_t at = t.find("SIGHUP: reopening"); at != std::string::npos;
         at = t.find("SIGHUP: reopening", at + 1)) {
      ++n;
    }
    return n;
  }();
  ASSERT_TRUE(broker.Signal(SIGHUP));
  ASSERT_TRUE(FileHas(log, "changed but NOT applied, needs a restart: targets")) << ReadAll(log);
  std::size_t reopen_lines_after = 0;
  const std::string text = ReadAll(log);
  for (std::size_t at = text.find("SIGHUP: reopening"); at != std::string::npos;
       at = text.find("SIGHUP: reopening", at + 1)) {
    ++reopen_lines_after;
  }
  EXPECT_EQ(reopen_lines_after, reopen_lines_before) << text;

  EXPECT_EQ(broker.Stop(SIGTERM, seconds(20)), 0) << ReadAll(log);
}

TEST(Reload, AnInvalidFileChangesNothingAndRestartOnlyChangesAreNamed) {
  ScratchDir dir("dsb-reload");
  const std::string prefix = UniqueName("ri").substr(0, 16);
  BrokerProcess broker(dir.path(), prefix, {BrokerTarget{"exch01", 8}});
  ASSERT_TRUE(broker.Start()) << broker.log();
  const fs::path config = broker.config_path();
  const std::string original = ReadAll(config);
  const std::string dsbctl = BinPath("dsbctl");
  const std::string socket = broker.socket().string();

  // Invalid: nothing changes, the error is logged, the broker serves on.
  WriteAll(config, original + "\n[broker.oops\n");
  ASSERT_EQ(::kill(broker.pid(), SIGHUP), 0);
  ASSERT_TRUE(broker.WaitForLog("refused, nothing changed")) << broker.log();
  const Outcome status = RunProgram({dsbctl, "--socket", socket, "status"}, milliseconds(10000));
  EXPECT_EQ(status.exit_code, 0) << status.output;

  // A valid value out of range is refused the same way (the whole file or nothing).
  std::string bad_level = original;
  bad_level.insert(bad_level.find("\n") + 1, "log_level = \"loud\"\nidle_timeout = \"2s\"\n");
  WriteAll(config, bad_level);
  ASSERT_EQ(::kill(broker.pid(), SIGHUP), 0);
  ASSERT_TRUE(broker.WaitForLog("broker.log_level: must be one of")) << broker.log();
  EXPECT_THAT(broker.log(), Not(HasSubstr("idle_timeout: 5s -> 2s")));

  // Safe and restart-only changes together: the first applied, the rest named.
  std::string mixed = original;
  mixed.insert(mixed.find("\n") + 1, "idle_timeout = \"2s\"\nmax_clients = 100\n");
  mixed.replace(mixed.find("limit = 8"), 9, "limit = 6");
  WriteAll(config, mixed);
  ASSERT_EQ(::kill(broker.pid(), SIGHUP), 0);
  ASSERT_TRUE(broker.WaitForLog("applied: idle_timeout: 5s -> 2s")) << broker.log();
  // max_clients as running (1024, or less if fitted under the file limit).
  ASSERT_TRUE(broker.WaitForLog("needs a restart: max_clients: ")) << broker.log();
  EXPECT_TRUE(broker.WaitForLog(" -> 100, targets")) << broker.log();
  // The limit was not applied.
  const Outcome json = RunProgram({dsbctl, "--socket", socket, "status", "--json"},
                                  milliseconds(10000));
  EXPECT_THAT(json.output, Not(HasSubstr("\"limit\":6"))) << json.output;
  EXPECT_EQ(broker.Stop(), 0) << broker.log();
}

}  // namespace
}  // namespace dsb::testing
