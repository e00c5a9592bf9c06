// Test helpers for running the tools as real processes: spawn with output to files, signal,
// wait with a deadline, and wait for a file to appear. Header-only, tests only.
//
// Thread rule: a ChildProcess is used by one test thread.
#ifndef DSB_TESTS_TOOLS_PROCESS_H_
#define DSB_TESTS_TOOLS_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/wait.h"

extern char** environ;

namespace dsb::tools_test {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

inline std::string BinPath(const std::string& name) {
  return std::string(DSB_BIN_DIR) + "/" + name;
}

// A fresh directory for one test's files, removed with the object.
class ScratchDir {
 public:
  ScratchDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "dsb-tools-XXXXXX").string();
    if (::mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using dsb::testing::WaitUntil;

// A child process started with posix_spawn; killed (SIGKILL) if still running at destruction.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      Wait(milliseconds(5000));
    }
  }

  // Starts argv[0] with stdout and stderr redirected to the given files. False on failure.
  bool Start(const std::vector<std::string>& argv, const std::string& stdout_path,
             const std::string& stderr_path) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }

  bool running() const { return pid_ > 0 && !status_; }
  pid_t pid() const { return pid_; }
  bool Signal(int sig) { return running() && ::kill(pid_, sig) == 0; }

  // Waits up to `timeout` for the process to exit; returns its wait status, or nullopt.
  std::optional<int> Wait(milliseconds timeout) {
    if (status_) return status_;
    if (pid_ <= 0) return std::nullopt;
    WaitUntil(
        [this] {
          int status = 0;
          if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
          return status_.has_value();
        },
        timeout);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace dsb::tools_test

#endif  // DSB_TESTS_TOOLS_PROCESS_H_
