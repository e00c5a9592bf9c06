// Framing of the broker's local socket protocol (clients and dsbctl <-> broker).
//
// A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
// JSON (one object). Frames above kMaxLocalFrame are refused by both sides.
// These helpers work on blocking file descriptors (client library, dsbctl);
// the broker has its own Asio reader, which decodes the length with
// DecodeFrameLength below. What the JSON says: common/local_protocol.h.
#ifndef DSB_COMMON_LOCAL_FRAME_H_
#define DSB_COMMON_LOCAL_FRAME_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsb {

inline constexpr std::size_t kMaxLocalFrame = 64 * 1024;
inline constexpr std::size_t kFrameHeaderBytes = 4;

using Deadline = std::chrono::steady_clock::time_point;

// Connects a blocking Unix stream socket to `path`. kBrokerUnavailable names
// the path and the OS error. Checks nothing about the peer and may block
// while the listener's backlog is full: for the broker's own probe of its
// socket and tests; clients and dsbctl use ConnectBroker.
Result<int> ConnectLocal(const std::string& path);

// As above, but never waits past `deadline`: a listener whose backlog is full
// (a broker that does not accept) is retried until then, then kTimeout naming
// the path. The returned descriptor is blocking.
Result<int> ConnectLocal(const std::string& path, Deadline deadline);

// ---- Who may answer on the broker's socket (issue 9) ------------------------
// Whoever can write the socket's folder can put a listener of its own at the
// path. A client or dsbctl believes the peer only if the kernel says
// (SO_PEERCRED) it runs as root, as the caller's effective uid, as the
// default broker user of this build if that user exists, or as the broker
// user the application named; it checks that before it sends a byte.

// The broker's account trusted without being named (the CMake cache variable
// DSB_DEFAULT_BROKER_USER, "dsb" by default: the package's unit runs the
// broker as that user), but only if a user of that name exists on this
// machine: only root makes accounts, so a name that resolves to no user adds
// nothing. Empty: no default.
extern const char* const kDefaultBrokerUser;

// The environment variable read when the application names no broker user:
// a user name or a decimal uid.
inline constexpr const char* kBrokerUserEnv = "DSB_BROKER_USER";

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The credentials of the process that made (bound/connected) the other end
// of `fd`, from SO_PEERCRED. kInternal if the kernel gives none.
Result<PeerCredentials> GetPeerCredentials(int fd);

struct BrokerTrust {
  // Trusted besides root and the caller's effective uid. nullopt: none.
  std::optional<uid_t> broker_uid;
  // The default broker user's uid, if that user exists; trusted as well.
  std::optional<uid_t> default_uid;
  // Where broker_uid came from ("ClientOptions::broker_user 'dsb'",
  // "DSB_BROKER_USER='dsb'"), for messages.
  std::string source;
  // How the caller's user names a broker user, for the refusal message
  // ("set ClientOptions::broker_user or DSB_BROKER_USER").
  std::string how_to_trust;
};

// The broker user from `spec` (a user name or a decimal uid; `spec_source`
// says where it came from) or, if `spec` is empty, from $DSB_BROKER_USER (if
// set and non-empty); neither: no extra uid. kInvalidArgument naming the
// value and its source if it is no user of this machine. Also the uid of the
// user named kDefaultBrokerUser, if there is one (default_uid).
Result<BrokerTrust> ResolveBrokerTrust(std::string_view spec, std::string_view spec_source,
                                       std::string how_to_trust);
// As above with `default_user` in place of the compiled-in kDefaultBrokerUser
// (a user name; empty or no such user: no default_uid), for tests.
Result<BrokerTrust> ResolveBrokerTrust(std::string_view spec, std::string_view spec_source,
                                       std::string how_to_trust, std::string_view default_user);

// "uid 1001 (mallory)", or "uid 1001" if the uid has no name.
std::string DescribeUid(uid_t uid);

// OK if `peer` is trusted by `trust`; else kPermissionDenied naming the
// socket `path`, the peer's pid and uid (with its name) and how to trust it.
Status CheckBrokerPeer(const PeerCredentials& peer, const std::string& path,
                       const BrokerTrust& trust);

struct BrokerConnection {
  int fd = -1;            // blocking; the caller closes it
  PeerCredentials peer;   // the broker's credentials (uid: the owner its segments must have)
};

// ConnectLocal(path, deadline), then CheckBrokerPeer; nothing is sent. On a
// refused peer the descriptor is closed and kPermissionDenied returned.
Result<BrokerConnection> ConnectBroker(const std::string& path, const BrokerTrust& trust,
                                       Deadline deadline);

// Writes one frame. kBrokerUnavailable on a closed peer, kProtocol if too big.
// Blocks while the peer does not read: only where that cannot hang a caller.
Status WriteFrame(int fd, std::string_view payload);

// As above, but waits for room in the socket at most until `deadline`:
// kTimeout if the peer does not read (`*partial` set if part of the frame
// went out: the stream is then out of step and must be closed).
Status WriteFrame(int fd, std::string_view payload, Deadline deadline, bool* partial = nullptr);

// Reads one frame, waiting at most `timeout` (negative = forever).
// kBrokerUnavailable on EOF/error, kTimeout, kProtocol on an oversized length.
Result<std::string> ReadFrame(int fd, std::chrono::milliseconds timeout);
// As above, until `deadline` (kTimeout if it has passed before a whole frame).
Result<std::string> ReadFrame(int fd, Deadline deadline);

// Encodes the 4-byte length prefix (alone: tests that send a bad frame).
std::string FrameHeader(std::size_t length);

// One frame: the length prefix, then `payload` (the one encoder of frames
// that WriteFrame and the broker's replies use). kProtocol naming the size
// if `payload` exceeds kMaxLocalFrame.
Result<std::string> EncodeFrame(std::string_view payload);

// Decodes a 4-byte length prefix (the only place that does). The caller
// refuses a length above kMaxLocalFrame (with a message of its own).
constexpr std::size_t DecodeFrameLength(const unsigned char (&header)[kFrameHeaderBytes]) {
  return (std::size_t{header[0]} << 24) | (std::size_t{header[1]} << 16) |
         (std::size_t{header[2]} << 8) | std::size_t{header[3]};
}

}  // namespace dsb

#endif  // DSB_COMMON_LOCAL_FRAME_H_
