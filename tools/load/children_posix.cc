// children.h on POSIX: one fork()ed child per instance (the code main.cc had before the
// Windows port, moved here; the parent's loop is unchanged).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "tools/load/children.h"

namespace dsb::load {

namespace {

using Clock = std::chrono::steady_clock;

struct Proc {
  int fd = -1;  // read end of the report pipe; -1 after EOF
  int status = 0;
};

void KillAll(const std::vector<Child>& children, int sig) {
  for (const Child& c : children) {
    if (c.pid > 0 && !c.exited) ::kill(c.pid, sig);
  }
}

}  // namespace

int RunChildren(const LoadOptions& o, Clock::time_point start, std::vector<Child>& children,
                ErrorCounts& errors) {
  // Signals are blocked before the fork so children inherit the mask (they take them with
  // sigtimedwait); the parent reads them from a signalfd.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  children.assign(static_cast<std::size_t>(o.instances), Child{});
  std::vector<Proc> procs(children.size());
  for (int i = 0; i < o.instances; ++i) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      std::perror("dsb-load: pipe");
      KillAll(children, SIGKILL);
      return 1;
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("dsb-load: fork");
      KillAll(children, SIGKILL);
      return 1;
    }
    if (pid == 0) {
      // An instance ends with dsb-load (a `kill -9` of dsb-load must not leave
      // DigiScope stand-ins holding sessions until their --duration ends).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) std::_Exit(1);  // dsb-load died before prctl
      ::close(fds[0]);
      for (int j = 0; j < i; ++j) ::close(procs[static_cast<std::size_t>(j)].fd);
      std::_Exit(RunInstance(o, i, fds[1]));
    }
    ::close(fds[1]);
    children[static_cast<std::size_t>(i)].pid = pid;
    procs[static_cast<std::size_t>(i)].fd = fds[0];
    std::fprintf(stderr, "dsb-load: instance %d pid %d\n", i, static_cast<int>(pid));
  }

  const int sigfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  WaitClock wait_clock(o, start);
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::size_t> owners;
    for (std::size_t i = 0; i < procs.size(); ++i) {
      if (procs[i].fd >= 0) {
        fds.push_back({procs[i].fd, POLLIN, 0});
        owners.push_back(i);
      }
    }
    if (fds.empty()) break;
    if (sigfd >= 0) fds.push_back({sigfd, POLLIN, 0});
    const int n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), 250);
    if (n < 0 && errno != EINTR) break;
    for (std::size_t k = 0; k < owners.size(); ++k) {
      if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      Child& c = children[owners[k]];
      Proc& p = procs[owners[k]];
      char chunk[8192];
      const ssize_t got = ::read(p.fd, chunk, sizeof(chunk));
      if (got > 0) {
        c.buffer.append(chunk, static_cast<std::size_t>(got));
        TakeLines(c, errors);
      } else if (got == 0 || errno != EINTR) {
        ::close(p.fd);
        p.fd = -1;
      }
    }
    if (sigfd >= 0 && (fds.back().revents & POLLIN) != 0) {
      signalfd_siginfo info{};
      if (::read(sigfd, &info, sizeof(info)) > 0) {
        std::fprintf(stderr, "dsb-load: signal %u, stopping the instances\n", info.ssi_signo);
        KillAll(children, SIGTERM);
      }
    }
    if (wait_clock.Turn(children)) KillAll(children, SIGKILL);
  }
  for (std::size_t i = 0; i < children.size(); ++i) {
    Child& c = children[i];
    int& status = procs[i].status;
    if (::waitpid(c.pid, &status, 0) != c.pid) continue;
    c.exited = true;
    if (WIFEXITED(status)) c.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) c.signal = WTERMSIG(status);
  }
  return 0;
}

}  // namespace dsb::load
