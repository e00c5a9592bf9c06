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

// Who a child process runs as.
struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;                 // primary group
  std::vector<gid_t> groups;     // supplementary groups
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

struct Outcome {
  int exit_code = -1;  // 128 + signal if killed; -1 if it could not start
  std::string output;  // stdout and stderr, interleaved
  bool timed_out = false;
};

// Runs `argv` (argv[0] an absolute path) as `who` (setgroups, setgid, setuid
// in the child before exec), stdout+stderr captured; `env` entries
// ("K=V") are added to the environment. Killed (SIGKILL) after `timeout`.
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

  pid_t pid() const { return pid_; }
  // Waits until the output contains `needle`; false after `timeout` or at EOF.
  bool WaitForOutput(const std::string& needle, std::chrono::milliseconds timeout);
  // Sends `sig`, waits for the exit; returns the exit code (128 + signal).
  int Stop(int sig);
  // Waits for the exit up to `timeout`; the exit code, or -1 if still running.
  int Wait(std::chrono::milliseconds timeout);
  std::string output() const;

 private:
  void Pump(std::chrono::milliseconds budget);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int status_ = -1;
  std::string output_;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_OS_USERS_H_
