// instance_os.h on Windows. There are no signals to block and take: a console control handler
// (it runs on a thread of its own that Windows starts) sets a manual-reset event, and the
// instance's main thread waits on that event with the same timeout WaitForStop gets on POSIX.
// A TerminateProcess (the role of SIGKILL) runs no handler at all, as SIGKILL runs none.
#include <io.h>
#include <windows.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "tools/load/instance_os.h"

namespace dsb::load {

namespace {

using Clock = std::chrono::steady_clock;

HANDLE StopEvent() {
  // Created on first use and kept for the process's life. A failure leaves nullptr: the
  // instance then stops only at the end of its --duration (said on stderr).
  static const HANDLE event = [] {
    const HANDLE e = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (e == nullptr) {
      std::fprintf(stderr, "dsb-load: CreateEvent failed (error %lu); Ctrl-C will not stop "
                           "this instance before its --duration ends\n", ::GetLastError());
    }
    return e;
  }();
  return event;
}

BOOL WINAPI OnConsoleControl(DWORD type) {
  switch (type) {
    case CTRL_C_EVENT:
    case CTRL_BREAK_EVENT:
    case CTRL_CLOSE_EVENT:
      if (const HANDLE e = StopEvent(); e != nullptr) ::SetEvent(e);
      return TRUE;  // handled: the instance ends its holds and reports, as on SIGTERM
    default:
      return FALSE;
  }
}

}  // namespace

bool WaitForStop(Clock::duration d) {
  static const bool installed = ::SetConsoleCtrlHandler(OnConsoleControl, TRUE) != 0;
  (void)installed;
  const HANDLE e = StopEvent();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::max<Clock::duration>(d, Clock::duration::zero()))
                      .count();
  // Round up so a wait never returns before `d` has passed (the caller's loop then sees
  // its deadline reached instead of spinning on zero-length waits).
  const DWORD wait_ms = static_cast<DWORD>(std::min<long long>(ms + 1, 0x7fffffff));
  if (e == nullptr) {
    ::Sleep(wait_ms);
    return false;
  }
  // Manual reset: once asked to stop, every later call says so at once too.
  return ::WaitForSingleObject(e, wait_ms) == WAIT_OBJECT_0;
}

void WriteAll(int fd, std::string_view rest) {
  while (!rest.empty()) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(rest.size(), 1 << 20));
    const int n = ::_write(fd, rest.data(), chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the parent is gone; nothing left to tell
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

ProcessId CurrentProcessId() { return ::GetCurrentProcessId(); }

}  // namespace dsb::load
