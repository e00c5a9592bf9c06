// instance_os.h on POSIX: the code instance.cc used before the Windows port, moved unchanged.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "tools/load/instance_os.h"

namespace dsb::load {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;

bool WaitForStop(Clock::duration d) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  const Clock::time_point end = Clock::now() + d;
  for (;;) {
    const auto left = std::max<Clock::duration>(end - Clock::now(), Clock::duration::zero());
    const auto ns = duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    const int sig = ::sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return true;
    if (errno == EINTR) continue;
    return false;  // EAGAIN: timed out
  }
}

void WriteAll(int fd, std::string_view rest) {
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the parent is gone; nothing left to tell
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

ProcessId CurrentProcessId() { return ::getpid(); }

}  // namespace dsb::load
