// Throw-away Unix users and groups for the security tests (issue 9), and
// programs run as them.
//
// Users and groups are made with groupadd/useradd (no home, no login shell)
// and removed by the destructor, so a test can play an outsider, a group
// member or an allowed client against a real broker. Making them needs root:
// without it Create() returns nullptr and says why (the test prints that in
// GTEST_SKIP). Names are "dsbt<random>" (8 hex digits), short enough for
// every tool. useradd locks /etc/passwd; tests running in parallel retry.
//
// Thread rule: none (call from the test's thread).
#ifndef DSB_TESTS_SUPPORT_OS_USERS_H_
#define DSB_TESTS_SUPPORT_OS_USERS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace dsb::testing {

// True when the process can make users and switch to them.
bool CanSwitchUsers(std::string* why);

class TempGroup {
 public:
  // nullptr (with *why set) if not root or groupadd failed.
  static std::unique_ptr<TempGroup> Create(std::string* why);
  ~TempGroup();  // groupdel
  TempGroup(const TempGroup&) = delete;
  TempGroup& operator=(const TempGroup&) = delete;

  gid_t gid() const { return gid_; }
  const std::string& name() const { return name_; }

 private:
  TempGroup() = default;
  std::string name_;
  gid_t gid_ = 0;
};

class TempUser {
 public:
  // A user with a primary group of its own (`primary`: that group instead)
  // and `supplementary` groups. nullptr (with *why set) on failure.
  static std::unique_ptr<TempUser> Create(std::string* why,
                                          std::vector<gid_t> supplementary = {},
                                          const TempGroup* primary = nullptr);
  ~TempUser();  // userdel (and its own group)
  TempUser(const TempUser&) = delete;
  TempUser& operator=(const TempUser&) = delete;

  uid_t uid() const { return id_.uid; }
  gid_t gid() const { return id_.gid; }
  const std::string& name() const { return name_; }
  const Identity& identity() const { return id_; }

 private:
  TempUser() = default;
  std::string name_;
  Identity id_;
  bool own_group_ = false;
};

// Runs `argv` (argv[0] an absolute path) as `who` (setgroups, setgid, setuid
// in the child before exec; Process does it), in a process group of its own,
// stdout+stderr captured; `env` entries ("K=V") are added to the environment.
// Killed (SIGKILL, with its group) after `timeout`.
Outcome RunProgramAs(const Identity& who, const std::vector<std::string>& argv,
                     std::chrono::milliseconds timeout, const std::vector<std::string>& env = {});

// A long-running program as `who` (a fake broker, a client holding slots).
// The destructor kills it (SIGKILL) by PID and reaps it.
class ProcessAs {
 public:
  ProcessAs(const Identity& who, const std::vector<std::string>& argv,
            const std::vector<std::string>& env = {});
  ~ProcessAs();
  ProcessAs(const ProcessAs&) = delete;
  ProcessAs& operator=(const ProcessAs&) = delete;

  pid_t pid() const { return process_.pid(); }
  // Waits until the output contains `needle`; false after `timeout` or at EOF.
  bool WaitForOutput(const std::string& needle, std::chrono::milliseconds timeout) {
    return process_.WaitForOutput(needle, timeout);
  }
  // Sends `sig`, waits for the exit (SIGKILL after 10 s); returns the exit
  // code (128 + signal).
  int Stop(int sig) { return process_.Stop(sig); }
  // Waits for the exit up to `timeout`; the exit code, or -1 if still running.
  int Wait(std::chrono::milliseconds timeout) {
    return process_.Wait(timeout) ? process_.exit_code() : -1;
  }
  std::string output() const { return process_.output(); }

 private:
  Process process_;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_OS_USERS_H_
