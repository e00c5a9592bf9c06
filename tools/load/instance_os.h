// What a dsb-load instance (instance.cc) asks of the operating system, behind one small seam:
// instance_os_posix.cc (signals, write(2), getpid) and instance_os_win.cc (a console control
// handler and an event, _write, GetCurrentProcessId).
#ifndef DSB_TOOLS_LOAD_INSTANCE_OS_H_
#define DSB_TOOLS_LOAD_INSTANCE_OS_H_

#include <chrono>
#include <string_view>

#include "common/account.h"

namespace dsb::load {

// Waits up to `d` for a request to stop the instance; true when one arrived.
// POSIX: SIGTERM or SIGINT, which the caller has blocked (they stay pending until taken here;
// REQUIRES: blocked in every thread). Windows: Ctrl-C, Ctrl-Break or the console closing
// (a console control handler installed by the first call sets an event).
bool WaitForStop(std::chrono::steady_clock::duration d);

// Writes all of `bytes` to file descriptor `fd`, retrying short writes. A failed write (the
// reader is gone) drops the rest: nobody is left to tell.
void WriteAll(int fd, std::string_view bytes);

// This process's id as the OS names it (what a kill or TerminateProcess takes).
ProcessId CurrentProcessId();

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_INSTANCE_OS_H_
