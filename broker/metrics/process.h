// The process metrics every Prometheus client library exports, with their
// names (process_cpu_seconds_total, process_resident_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds), read from
// /proc/self (Linux; process_posix.cc) or the process handle (Windows;
// process_win.cc: GetProcessTimes, GetProcessMemoryInfo, GetProcessHandleCount;
// no process_max_fds there). A value that cannot be read is left out of the scrape
// rather than reported as 0.
#ifndef DSB_BROKER_METRICS_PROCESS_H_
#define DSB_BROKER_METRICS_PROCESS_H_

#include "broker/metrics/exposition.h"

namespace dsb::metrics {

// Declares the five families in `out` and adds the samples it could read.
void AddProcessMetrics(Exposition& out);

// The platform part of AddProcessMetrics (process_posix.cc, process_win.cc):
// adds the samples it could read; the families are declared once, in
// process.cc. REQUIRES: the five families are declared in `out`.
void AddProcessSamples(Exposition& out);

}  // namespace dsb::metrics

#endif  // DSB_BROKER_METRICS_PROCESS_H_
