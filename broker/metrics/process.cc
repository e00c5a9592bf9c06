// Process metrics (process.h): the five families are declared here, the same
// on every platform; the samples are read by the platform file
// (process_posix.cc, process_win.cc).
#include "broker/metrics/process.h"

namespace dsb::metrics {

void AddProcessMetrics(Exposition& out) {
  out.Family("process_cpu_seconds_total", Type::kCounter,
             "Total user and system CPU time spent in seconds.");
  out.Family("process_resident_memory_bytes", Type::kGauge, "Resident memory size in bytes.");
  out.Family("process_open_fds", Type::kGauge, "Number of open file descriptors.");
  out.Family("process_max_fds", Type::kGauge, "Maximum number of open file descriptors.");
  out.Family("process_start_time_seconds", Type::kGauge,
             "Start time of the process since unix epoch in seconds.");
  AddProcessSamples(out);
}

}  // namespace dsb::metrics
