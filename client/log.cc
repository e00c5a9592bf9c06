#include "client/log.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string_view>
#include <utility>

namespace dsb {
namespace {

// Never destroyed: a Client leaked by the host may still log from its reader
// thread while static objects are being torn down at exit.
struct SinkState {
  std::mutex mu;  // held while the sink runs: SetLogSink waits for a call in progress
  LogSink sink;   // empty = stderr
};
SinkState& State() {
  static SinkState* state = new SinkState;
  return *state;
}

}  // namespace

void SetLogSink(LogSink sink) noexcept {
  SinkState& s = State();
  {
    std::lock_guard lock(s.mu);
    s.sink.swap(sink);
  }
  // The previous sink (now in `sink`) is destroyed here, outside the lock.
}

namespace client_log {

void Logf(LogLevel level, const char* format, ...) noexcept {
  char line[1024];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n < 0) return;
  const std::size_t length = std::min(static_cast<std::size_t>(n), sizeof line - 1);
  SinkState& s = State();
  std::lock_guard lock(s.mu);
  if (s.sink) {
    try {
      s.sink(level, std::string_view(line, length));
    } catch (...) {
      // A sink that throws loses its message; the library carries on.
    }
    return;
  }
  std::fprintf(stderr, "dsb: %s\n", line);
}

}  // namespace client_log
}  // namespace dsb
