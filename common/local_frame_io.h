// The byte moving under local_frame.h's ReadFrame/WriteFrame, one per platform
// (local_frame_posix.cc: poll + recv/send; local_frame_win.cc: overlapped
// ReadFile/WriteFile and a wait on the I/O's event). Internal to common/.
#ifndef DSB_COMMON_LOCAL_FRAME_IO_H_
#define DSB_COMMON_LOCAL_FRAME_IO_H_

#include <cstddef>

#include "common/local_frame.h"

namespace dsb::detail {

// Reads exactly `n` bytes into `out`, waiting at most until `deadline`
// (`forever`: no bound). kTimeout "broker did not answer in time";
// kBrokerUnavailable "broker closed the connection" on EOF (or after
// ShutdownLocal), or naming the OS error.
Status ReadExact(LocalHandle fd, char* out, std::size_t n, Deadline deadline, bool forever);

// Writes all of `buf`, waiting for room at most until `deadline`. kTimeout
// if the peer does not read (`*sent`: how much went out), kBrokerUnavailable
// on a closed peer naming the OS error.
Status WriteAll(LocalHandle fd, std::string_view buf, Deadline deadline, std::size_t* sent);

}  // namespace dsb::detail

#endif  // DSB_COMMON_LOCAL_FRAME_IO_H_
