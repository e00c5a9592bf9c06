// Framing of the broker's local socket protocol (clients and dsbctl <-> broker).
//
// A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
// JSON (one object). Frames above kMaxLocalFrame are refused by both sides.
// These helpers work on blocking file descriptors (client library, dsbctl);
// the broker has its own Asio reader with the same rules.
#ifndef DSB_COMMON_LOCAL_FRAME_H_
#define DSB_COMMON_LOCAL_FRAME_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsb {

inline constexpr std::size_t kMaxLocalFrame = 64 * 1024;
inline constexpr int kLocalProtocolVersion = 1;

// Connects a blocking Unix stream socket to `path`. kBrokerUnavailable names
// the path and the OS error.
Result<int> ConnectLocal(const std::string& path);

// Writes one frame. kBrokerUnavailable on a closed peer, kProtocol if too big.
Status WriteFrame(int fd, std::string_view payload);

// Reads one frame, waiting at most `timeout` (negative = forever).
// kBrokerUnavailable on EOF/error, kTimeout, kProtocol on an oversized length.
Result<std::string> ReadFrame(int fd, std::chrono::milliseconds timeout);

// Encodes the 4-byte length prefix.
std::string FrameHeader(std::size_t length);

}  // namespace dsb

#endif  // DSB_COMMON_LOCAL_FRAME_H_
