// dsb-winkill: ends a Windows process by id with TerminateProcess, the role `kill -9` plays in
// the Linux tests (no handler runs in the victim, its handles are closed by the kernel: pipes
// break, sockets reset, mutexes it held are abandoned).
//
//   dsb-winkill PID [EXIT_CODE]     (EXIT_CODE defaults to 137, 128 + SIGKILL)
//
// Exit 0 when the process was terminated and has ended (waited for, up to 10 s), 1 when it
// could not be opened or terminated (the reason on stderr), 2 for bad arguments. The tests
// under Wine run it beside the processes they started (Wine's process ids are Windows ids, not
// the Linux pids of the wine loader).
#include <windows.h>

#include <charconv>
#include <cstdio>
#include <string_view>

namespace {

bool ParseU32(std::string_view text, unsigned long& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && ptr == text.data() + text.size() &&
         out <= 0xffffffffUL;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long pid = 0, code = 137;
  if (argc < 2 || argc > 3 || !ParseU32(argv[1], pid) || (argc == 3 && !ParseU32(argv[2], code))) {
    std::fprintf(stderr, "usage: dsb-winkill PID [EXIT_CODE]  (PID a Windows process id)\n");
    return 2;
  }
  const HANDLE process =
      ::OpenProcess(PROCESS_TERMINATE | SYNCHRONIZE, FALSE, static_cast<DWORD>(pid));
  if (process == nullptr) {
    std::fprintf(stderr, "dsb-winkill: cannot open process %lu (error %lu)\n", pid,
                 ::GetLastError());
    return 1;
  }
  if (!::TerminateProcess(process, static_cast<UINT>(code))) {
    std::fprintf(stderr, "dsb-winkill: TerminateProcess(%lu) failed (error %lu)\n", pid,
                 ::GetLastError());
    ::CloseHandle(process);
    return 1;
  }
  const DWORD waited = ::WaitForSingleObject(process, 10'000);
  ::CloseHandle(process);
  if (waited != WAIT_OBJECT_0) {
    std::fprintf(stderr, "dsb-winkill: process %lu did not end within 10 s\n", pid);
    return 1;
  }
  return 0;
}
