// One dsb-load instance: what a single DigiScope process does (see README.md).
//
// RunInstance runs in a forked child that has no thread yet. It registers with the broker (in
// broker mode), opens and holds its system session, runs the action threads until the duration
// ends or SIGTERM/SIGINT arrives, and writes JSON lines to `report_fd`: a "progress" line about
// once a second and one "result" line at the end.
#ifndef DSB_TOOLS_LOAD_INSTANCE_H_
#define DSB_TOOLS_LOAD_INSTANCE_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace dsb::load {

struct LoadOptions {
  int instances = 1;
  int threads = 1;
  double duration_s = 1.0;
  std::string server;  // HOST:PORT of dsb-simserver, or postgresql://USER@HOST:PORT/DB
  std::string user = "digiscope";  // simserver account (PostgreSQL: the URL's user)
  // PostgreSQL mode (server is a postgresql:// URL): how a session is closed before its slot
  // is given back. "confirmed": Terminate, wait for the server's EOF, then release;
  // "plain": PQfinish then release (the server may still count the session for a while).
  bool postgres = false;
  std::string close_mode = "confirmed";
  // Broker mode: tell the broker about every refusal (ReportSessionLimit, while the permit of
  // the refused attempt is still held). Feeds limit discovery; off unless asked for.
  bool report_refusals = false;
  bool no_broker = false;
  std::string socket_path;  // broker socket
  std::string target;       // broker target
  // Hold time: uniform in [min, max], or exponential with the given mean.
  std::string hold_dist = "uniform";
  double hold_ms_min = 5;
  double hold_ms_max = 20;
  double hold_ms_mean = 10;
  double think_ms = 0;
  std::int64_t acquire_timeout_ms = 1000;
  // Back-off after a refusal or error: uniform in [min, max].
  double backoff_ms_min = 20;
  double backoff_ms_max = 60;
  std::int64_t io_timeout_ms = 5000;
  std::uint64_t seed = 0;
};

// Runs instance number `index` and returns the process exit code (0 unless the instance could
// not start at all). REQUIRES: SIGTERM and SIGINT are blocked in the calling thread and no other
// thread exists (they are consumed with sigtimedwait).
int RunInstance(const LoadOptions& options, int index, int report_fd);

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_INSTANCE_H_
