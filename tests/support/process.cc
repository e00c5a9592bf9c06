#include "tests/support/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace dsb::testing {
namespace {

using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

Ms Left(SteadyClock::time_point deadline) {
  // Rounded up: a wait never ends before its deadline.
  const auto left = std::chrono::ceil<Ms>(deadline - SteadyClock::now());
  return left.count() > 0 ? left : Ms(0);
}

int PollMs(Ms ms) { return static_cast<int>(std::min<Ms::rep>(ms.count(), 1'000'000)); }

// The program `name` names: itself if it holds a '/', else the first
// executable of that name in PATH. Empty if there is none.
std::string ResolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// The test's environment with `extra` ("NAME=value") replacing same names.
std::vector<std::string> MergedEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> out;
  auto name_of = [](const std::string& e) { return e.substr(0, e.find('=')); };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry = *e;
    bool replaced = false;
    for (const std::string& x : extra) replaced = replaced || name_of(x) == name_of(entry);
    if (!replaced) out.push_back(entry);
  }
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Async-signal-safe text out of the child before exec.
void ChildSay(const char* a, const char* b = "", const char* c = "") {
  for (const char* s : {a, b, c}) {
    ssize_t ignored = ::write(2, s, std::strlen(s));
    (void)ignored;
  }
}

int OpenOutput(const std::filesystem::path& path, bool append) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC),
                0644);
}

}  // namespace

std::string BinPath(const std::string& name) {
#ifdef DSB_TEST_BROKER
  // A build that does not build the broker itself (the tsan preset: the
  // broker is one thread, so tsan finds nothing in it) runs the one named
  // by the cache variable DSB_TEST_BROKER (tests/CMakeLists.txt).
  if (name == "dsb-broker") return DSB_TEST_BROKER;
#endif
  return std::string(DSB_BIN_DIR) + "/" + name;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

Process::~Process() {
  if (running()) Kill();
  JoinReader();
}

bool Process::Start(const std::vector<std::string>& argv, const std::string& stdout_path,
                    const std::string& stderr_path) {
  SpawnOptions options;
  options.output = Output::kFiles;
  options.stdout_file = stdout_path;
  options.stderr_file = stderr_path;
  return Start(argv, options);
}

bool Process::Start(const std::vector<std::string>& argv, const SpawnOptions& options) {
  error_.clear();
  if (argv.empty() || alive()) {
    error_ = argv.empty() ? "no program given" : "already running (pid " + std::to_string(pid_) + ")";
    return false;
  }
  JoinReader();
  pid_ = -1;
  status_.reset();
  group_ = options.new_process_group || options.new_session;
  {
    std::lock_guard lock(mu_);
    output_.clear();
    output_end_ = false;
  }

  // Everything the child needs is made here, before the fork.
  const std::string program = ResolveProgram(argv[0]);
  if (program.empty()) {
    error_ = "cannot find program " + argv[0];
    return false;
  }
  std::vector<std::string> args = argv;
  std::vector<char*> arg_ptrs = Pointers(args);
  std::vector<std::string> env = MergedEnvironment(options.env);
  std::vector<char*> env_ptrs = Pointers(env);
  std::vector<gid_t> groups = options.as ? options.as->groups : std::vector<gid_t>{};
  const bool switch_user =
      options.as && (options.as->uid != ::geteuid() || options.as->gid != ::getegid() ||
                     !options.as->groups.empty());

  int out_fd = -1;
  int err_fd = -1;
  int capture[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {out_fd, err_fd, capture[0], capture[1]}) {
      if (fd >= 0) ::close(fd);
    }
  };
  const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int null_out = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  auto close_null = [&] {
    if (null_in >= 0) ::close(null_in);
    if (null_out >= 0) ::close(null_out);
  };
  switch (options.output) {
    case Output::kInherit:
      break;
    case Output::kNull:
      out_fd = ::fcntl(null_out, F_DUPFD_CLOEXEC, 3);
      err_fd = ::fcntl(null_out, F_DUPFD_CLOEXEC, 3);
      break;
    case Output::kFiles:
      out_fd = OpenOutput(options.stdout_file, options.append);
      err_fd = options.stderr_file == options.stdout_file
                   ? ::fcntl(out_fd, F_DUPFD_CLOEXEC, 3)
                   : OpenOutput(options.stderr_file, options.append);
      if (out_fd < 0 || err_fd < 0) {
        error_ = "cannot open " + options.stdout_file.string() + " or " +
                 options.stderr_file.string() + ": " + std::strerror(errno);
        close_all();
        close_null();
        return false;
      }
      break;
    case Output::kCapture:
      if (::pipe2(capture, O_CLOEXEC) != 0) {
        error_ = std::string("pipe2: ") + std::strerror(errno);
        close_null();
        return false;
      }
      out_fd = capture[1];
      err_fd = options.capture_stderr ? capture[1] : -1;
      break;
  }
  // The child reports a failed exec (its errno) through this pipe; a
  // successful exec closes it (O_CLOEXEC) and the parent reads EOF.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    error_ = std::string("pipe2: ") + std::strerror(errno);
    close_all();
    close_null();
    return false;
  }
  const int stdin_fd = options.stdin_fd >= 0 ? options.stdin_fd : null_in;
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: async-signal-safe calls only from here to exec.
    if (options.new_session) {
      ::setsid();
    } else if (options.new_process_group) {
      ::setpgid(0, 0);
    }
    if (stdin_fd >= 0) ::dup2(stdin_fd, 0);
    if (out_fd >= 0) ::dup2(out_fd, 1);
    if (err_fd >= 0) ::dup2(err_fd, 2);
    if (switch_user) {
      if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(options.as->gid) != 0 ||
          ::setuid(options.as->uid) != 0) {
        ChildSay("cannot switch to another user: ", std::strerror(errno), "\n");
        ::_exit(126);
      }
    }
    // After the user switch: changing credentials clears the death signal.
    if (options.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);  // the parent died before prctl
    }
    ::execve(program.c_str(), arg_ptrs.data(), env_ptrs.data());
    const int e = errno;
    ssize_t ignored = ::write(report[1], &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(report[1]);
  if (capture[1] >= 0) ::close(capture[1]);
  if (out_fd >= 0 && out_fd != capture[1]) ::close(out_fd);
  if (err_fd >= 0 && err_fd != capture[1]) ::close(err_fd);
  close_null();
  if (pid < 0) {
    ::close(report[0]);
    if (capture[0] >= 0) ::close(capture[0]);
    error_ = std::string("fork: ") + std::strerror(fork_errno);
    return false;
  }
  int exec_errno = 0;
  ssize_t n = 0;
  while ((n = ::read(report[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  pid_ = pid;
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = status;
    if (capture[0] >= 0) ::close(capture[0]);
    error_ = "cannot run " + program + ": " + std::strerror(exec_errno);
    return false;
  }
  if (capture[0] >= 0 && ::pipe2(stop_, O_CLOEXEC) != 0) stop_[0] = stop_[1] = -1;
  if (capture[0] >= 0) {
    // Reads until the child's output ends, or JoinReader() asks it to stop
    // (a grandchild may hold the output open after the child is gone).
    reader_ = std::thread([this, fd = capture[0], stop = stop_[0]] {
      char buf[4096];
      for (;;) {
        pollfd p[2] = {{fd, POLLIN, 0}, {stop, POLLIN, 0}};
        if (::poll(p, stop >= 0 ? 2 : 1, -1) < 0) {
          if (errno == EINTR) continue;
        } else if (stop >= 0 && p[1].revents != 0) {
          std::lock_guard lock(mu_);
          output_end_ = true;
          cv_.notify_all();
          break;
        }
        const ssize_t got = ::read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        std::lock_guard lock(mu_);
        if (got <= 0) {
          output_end_ = true;
          cv_.notify_all();
          break;
        }
        output_.append(buf, static_cast<std::size_t>(got));
        cv_.notify_all();
      }
      ::close(fd);
    });
  } else {
    std::lock_guard lock(mu_);
    output_end_ = true;
  }
  return true;
}

void Process::JoinReader() {
  if (reader_.joinable()) {
    if (stop_[1] >= 0) {
      const char c = 0;
      ssize_t ignored = ::write(stop_[1], &c, 1);
      (void)ignored;
    }
    reader_.join();
  }
  for (int& fd : stop_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

bool Process::alive() {
  if (!running()) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
  return running();
}

bool Process::Signal(int sig) {
  if (!running()) return false;
  if (group_ && ::kill(-pid_, sig) == 0) return true;
  return ::kill(pid_, sig) == 0;
}

std::optional<int> Process::Wait(Ms timeout) {
  if (pid_ <= 0) return std::nullopt;
  if (status_) return status_;
  const auto deadline = SteadyClock::now() + timeout;
  // A pidfd turns readable when the child ends: no polling interval.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      break;
    }
    const Ms left = Left(deadline);
    if (left.count() == 0) break;
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      (void)::poll(&p, 1, PollMs(left));
    } else {
      std::this_thread::sleep_for(std::min(left, Ms(5)));  // no pidfd (Linux < 5.3)
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  // The rest of a captured output: the child's end closed with it (a
  // grandchild holding it open is not waited for).
  if (status_) (void)WaitForOutputEnd(std::min(Left(deadline) + Ms(1000), Ms(2000)));
  return status_;
}

void Process::Kill() {
  if (!running()) return;
  Signal(SIGKILL);
  Signal(SIGCONT);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = status;
  (void)WaitForOutputEnd(Ms(2000));
}

int Process::Stop(int sig, Ms timeout) {
  if (pid_ <= 0) return -1;
  if (running()) {
    Signal(SIGCONT);
    Signal(sig);
    if (!Wait(timeout)) Kill();
  }
  return exit_code();
}

std::string Process::output() const {
  std::lock_guard lock(mu_);
  return output_;
}

bool Process::WaitForOutput(const std::string& needle, Ms timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout,
               [&] { return output_.find(needle) != std::string::npos || output_end_; });
  return output_.find(needle) != std::string::npos;
}

bool Process::WaitForOutputEnd(Ms timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return output_end_; });
}

Outcome RunProgram(const std::vector<std::string>& argv, Ms timeout, const SpawnOptions& options) {
  Outcome o;
  Process p;
  if (!p.Start(argv, options)) {
    o.output = p.error();
    o.exit_code = p.exit_code();
    return o;
  }
  if (!p.Wait(timeout)) {
    o.timed_out = true;
    p.Kill();
  }
  o.exit_code = p.exit_code();
  o.output = p.output();
  return o;
}

}  // namespace dsb::testing
