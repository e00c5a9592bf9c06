// Starting a process on Windows from dsb's tools and tests, robust to one failure of Wine's.
//
// Under Wine 8 about one process start in several thousand fails before the new
// process runs a single instruction of its own: CreateProcessW answers
// ERROR_INTERNAL_ERROR (1359), and a program started from Linux exits with status 1
// having written nothing (cmake/wine-run starts such a program again). Nothing was
// started, so starting again is safe: no instruction of the program ran twice. Real
// Windows does not answer CreateProcessW so; the retry costs nothing there.
#pragma once

#ifdef _WIN32

#include <windows.h>

#include <cstdio>

namespace dsb::win {

// Calls `create` (a CreateProcessW or CreateProcessA call, returning its BOOL) up to
// three times while it fails with ERROR_INTERNAL_ERROR, saying so on stderr each time.
// The call must be repeatable: a command line CreateProcessW may have written into is
// still the same command line.
template <typename Create>
BOOL StartRetryingWine(Create&& create) {
  for (int attempt = 1;; ++attempt) {
    const BOOL ok = create();
    if (ok || ::GetLastError() != ERROR_INTERNAL_ERROR || attempt == 3) return ok;
    std::fprintf(stderr,
                 "dsb: CreateProcess failed with ERROR_INTERNAL_ERROR (Wine's start-up "
                 "failure; nothing ran): starting it again (attempt %d of 3)\n",
                 attempt + 1);
    std::fflush(stderr);
  }
}

}  // namespace dsb::win

#endif  // _WIN32
