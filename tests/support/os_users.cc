#include "tests/support/os_users.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

namespace dsb::testing {

namespace {

using Ms = std::chrono::milliseconds;

std::string RandomName() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof buf, "dsbt%08x", rd());
  return buf;
}

// Runs a shadow-utils command to completion (stdout/stderr captured). The
// tools lock /etc/passwd and /etc/group; tests running in parallel retry.
bool RunAdmin(const std::vector<std::string>& argv, std::string* why) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const Outcome o = RunProgramAs(Identity{::geteuid(), ::getegid(), {}}, argv, Ms(20000));
    if (o.exit_code == 0) return true;
    // 10: cannot lock /etc/group (groupadd/groupdel), 1: cannot lock /etc/passwd.
    const bool locked = o.output.find("lock") != std::string::npos;
    if (!locked) {
      *why = argv[0] + " failed (exit " + std::to_string(o.exit_code) + "): " + o.output;
      return false;
    }
    std::this_thread::sleep_for(Ms(20 + attempt * 10));  // back-off between lock attempts
  }
  *why = argv[0] + ": /etc/passwd stayed locked";
  return false;
}

std::string JoinGids(const std::vector<gid_t>& gids) {
  std::string out;
  for (gid_t g : gids) {
    const group* gr = ::getgrgid(g);
    if (gr == nullptr) continue;
    out += (out.empty() ? "" : ",") + std::string(gr->gr_name);
  }
  return out;
}

// In the child, before exec: become `who`, with stdout and stderr on `out`.
[[noreturn]] void ExecAs(const Identity& who, const std::vector<std::string>& argv,
                         const std::vector<std::string>& env, int out) {
  ::dup2(out, 1);
  ::dup2(out, 2);
  const int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0) ::dup2(devnull, 0);
  ::setpgid(0, 0);
  if (who.uid != ::geteuid() || who.gid != ::getegid() || !who.groups.empty()) {
    if (::setgroups(who.groups.size(), who.groups.data()) != 0 || ::setgid(who.gid) != 0 ||
        ::setuid(who.uid) != 0) {
      std::fprintf(stderr, "cannot switch to uid %u: %s\n", static_cast<unsigned>(who.uid),
                   std::strerror(errno));
      ::_exit(126);
    }
  }
  for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
  ::_exit(127);
}

pid_t Spawn(const Identity& who, const std::vector<std::string>& argv,
            const std::vector<std::string>& env, int* out_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ExecAs(who, argv, env, fds[1]);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return -1;
  }
  *out_fd = fds[0];
  return pid;
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Reads what `fd` has within `budget`; false at EOF.
bool ReadSome(int fd, std::string* into, Ms budget) {
  pollfd p{fd, POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(budget.count()));
  if (r <= 0) return true;
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  if (n <= 0) return false;
  into->append(buf, static_cast<std::size_t>(n));
  return true;
}

}  // namespace

bool CanSwitchUsers(std::string* why) {
  if (::geteuid() != 0) {
    *why = "not root: the security tests need throw-away users (useradd) and setuid";
    return false;
  }
  if (::access("/usr/sbin/useradd", X_OK) != 0 || ::access("/usr/sbin/groupadd", X_OK) != 0) {
    *why = "useradd/groupadd not found (Debian package passwd)";
    return false;
  }
  return true;
}

std::unique_ptr<TempGroup> TempGroup::Create(std::string* why) {
  if (!CanSwitchUsers(why)) return nullptr;
  auto g = std::unique_ptr<TempGroup>(new TempGroup());
  g->name_ = RandomName();
  if (!RunAdmin({"/usr/sbin/groupadd", g->name_}, why)) return nullptr;
  const group* gr = ::getgrnam(g->name_.c_str());
  if (gr == nullptr) {
    *why = "groupadd " + g->name_ + " succeeded but getgrnam cannot find it";
    return nullptr;
  }
  g->gid_ = gr->gr_gid;
  return g;
}

TempGroup::~TempGroup() {
  std::string why;
  if (!name_.empty()) (void)RunAdmin({"/usr/sbin/groupdel", name_}, &why);
}

std::unique_ptr<TempUser> TempUser::Create(std::string* why, std::vector<gid_t> supplementary,
                                           const TempGroup* primary) {
  if (!CanSwitchUsers(why)) return nullptr;
  auto u = std::unique_ptr<TempUser>(new TempUser());
  u->name_ = RandomName();
  std::vector<std::string> argv{"/usr/sbin/useradd", "--no-create-home", "--shell",
                                "/usr/sbin/nologin"};
  if (primary != nullptr) {
    argv.insert(argv.end(), {"--gid", primary->name()});
  } else {
    argv.push_back("--user-group");
    u->own_group_ = true;
  }
  const std::string groups = JoinGids(supplementary);
  if (!groups.empty()) argv.insert(argv.end(), {"--groups", groups});
  argv.push_back(u->name_);
  if (!RunAdmin(argv, why)) return nullptr;
  const passwd* pw = ::getpwnam(u->name_.c_str());
  if (pw == nullptr) {
    *why = "useradd " + u->name_ + " succeeded but getpwnam cannot find it";
    return nullptr;
  }
  u->id_.uid = pw->pw_uid;
  u->id_.gid = pw->pw_gid;
  u->id_.groups = supplementary;
  u->id_.groups.push_back(pw->pw_gid);
  return u;
}

TempUser::~TempUser() {
  std::string why;
  // userdel also removes the user's own group (USERGROUPS_ENAB).
  if (!name_.empty()) (void)RunAdmin({"/usr/sbin/userdel", name_}, &why);
}

Outcome RunProgramAs(const Identity& who, const std::vector<std::string>& argv, Ms timeout,
                     const std::vector<std::string>& env) {
  Outcome o;
  int fd = -1;
  const pid_t pid = Spawn(who, argv, env, &fd);
  if (pid < 0) {
    o.output = std::string("fork failed: ") + std::strerror(errno);
    return o;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool open = true;
  while (open) {
    const auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      o.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      break;
    }
    open = ReadSome(fd, &o.output, std::min(left, Ms(100)));
  }
  ::close(fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  o.exit_code = ExitCodeOf(status);
  return o;
}

ProcessAs::ProcessAs(const Identity& who, const std::vector<std::string>& argv,
                     const std::vector<std::string>& env) {
  pid_ = Spawn(who, argv, env, &out_fd_);
}

ProcessAs::~ProcessAs() {
  if (pid_ > 0 && status_ < 0) Stop(SIGKILL);
  if (out_fd_ >= 0) ::close(out_fd_);
}

void ProcessAs::Pump(Ms budget) {
  if (out_fd_ < 0) return;
  if (!ReadSome(out_fd_, &output_, budget)) {
    ::close(out_fd_);
    out_fd_ = -1;
  }
}

bool ProcessAs::WaitForOutput(const std::string& needle, Ms timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (output_.find(needle) == std::string::npos) {
    const auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || out_fd_ < 0) return false;
    Pump(std::min(left, Ms(100)));
  }
  return true;
}

int ProcessAs::Wait(Ms timeout) {
  if (pid_ <= 0) return -1;
  if (status_ >= 0) return ExitCodeOf(status_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      while (out_fd_ >= 0) Pump(Ms(100));  // the rest of its output
      return ExitCodeOf(status);
    }
    const auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return -1;
    // Reading the output also waits: a child that ends closes its end.
    if (out_fd_ >= 0) {
      Pump(std::min(left, Ms(20)));
    } else {
      // Output closed but still running: wait for the exit itself (a pidfd
      // turns readable when the process ends).
      const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
      if (pfd < 0) return -1;
      pollfd p{pfd, POLLIN, 0};
      (void)::poll(&p, 1, static_cast<int>(left.count()));
      ::close(pfd);
    }
  }
}

int ProcessAs::Stop(int sig) {
  if (pid_ <= 0) return -1;
  if (status_ >= 0) return ExitCodeOf(status_);
  ::kill(pid_, sig);
  const int code = Wait(Ms(10000));
  if (code >= 0) return code;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  return Wait(Ms(10000));
}

std::string ProcessAs::output() const { return output_; }

}  // namespace dsb::testing
