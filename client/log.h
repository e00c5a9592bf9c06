// The client library's own messages: one place decides where they go (the
// host's sink set by dsb::SetLogSink / dsb_set_log_callback, else stderr).
#ifndef DSB_CLIENT_LOG_H_
#define DSB_CLIENT_LOG_H_

#include "dsb/client.h"

namespace dsb::client_log {

// Formats like printf (at most 1023 bytes; longer is cut) and hands the line
// to the sink, or writes "dsb: <line>\n" to stderr when none is set. Never
// throws, never allocates on the default path; serialised with SetLogSink.
void Logf(LogLevel level, const char* format, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace dsb::client_log

#endif  // DSB_CLIENT_LOG_H_
