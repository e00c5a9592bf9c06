// Process metrics on Windows (process.h): the same five families, read from
// the process's own handle. process_open_fds counts kernel handles (files,
// pipes, events, ...: what a descriptor is on Linux); process_max_fds has no
// Windows counterpart (the per-process handle limit is 2^24, not a setting)
// and is left out, as every unreadable value is.
#include <windows.h>
// windows.h first: psapi.h uses its types.
#include <psapi.h>

#include <cstdint>

#include "broker/metrics/process.h"

namespace dsb::metrics {
namespace {

// FILETIME (100 ns units) as a count.
std::uint64_t Ticks(const FILETIME& t) {
  return (std::uint64_t{t.dwHighDateTime} << 32) | t.dwLowDateTime;
}

// 100 ns ticks from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
constexpr std::uint64_t kUnixEpochTicks = 116444736000000000ULL;

}  // namespace

void AddProcessSamples(Exposition& out) {
  HANDLE self = GetCurrentProcess();
  FILETIME created{}, exited{}, kernel{}, user{};
  if (GetProcessTimes(self, &created, &exited, &kernel, &user)) {
    out.Sample("process_cpu_seconds_total", {},
               static_cast<double>(Ticks(kernel) + Ticks(user)) / 1e7);
    if (Ticks(created) > kUnixEpochTicks) {
      out.Sample("process_start_time_seconds", {},
                 static_cast<double>(Ticks(created) - kUnixEpochTicks) / 1e7);
    }
  }
  PROCESS_MEMORY_COUNTERS memory{};
  if (GetProcessMemoryInfo(self, &memory, sizeof memory)) {
    out.Sample("process_resident_memory_bytes", {}, static_cast<double>(memory.WorkingSetSize));
  }
  DWORD handles = 0;
  if (GetProcessHandleCount(self, &handles)) {
    out.Sample("process_open_fds", {}, static_cast<double>(handles));
  }
}

}  // namespace dsb::metrics
