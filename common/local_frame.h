// Framing of the broker's local socket protocol (clients and dsbctl <-> broker).
//
// A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
// JSON (one object). Frames above kMaxLocalFrame are refused by both sides.
// These helpers work on blocking file descriptors (client library, dsbctl);
// the broker has its own Asio reader, which decodes the length with
// DecodeFrameLength below. What the JSON says: common/local_protocol.h.
//
// The transport (issue 12): on POSIX a Unix stream socket at a path; on
// Windows a named pipe whose "path" is its name, \\.\pipe\dsb-<id>, opened
// for overlapped I/O (deadlines are waits on an event, no thread). The peer's
// credentials come from SO_PEERCRED, or on Windows from the pipe
// (GetNamedPipeServerProcessId) and that process's token. Code above this
// header does not know which (local_frame_posix.cc, local_frame_win.cc).
#ifndef DSB_COMMON_LOCAL_FRAME_H_
#define DSB_COMMON_LOCAL_FRAME_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/account.h"
#include "common/status.h"

namespace dsb {

// One connection of the local transport: a socket descriptor on POSIX, a
// pipe HANDLE (opened FILE_FLAG_OVERLAPPED) on Windows. kNoLocalHandle: none.
#ifdef _WIN32
using LocalHandle = void*;
inline constexpr LocalHandle kNoLocalHandle = nullptr;
#else
using LocalHandle = int;
inline constexpr LocalHandle kNoLocalHandle = -1;
#endif

// Closes `h` (nothing for kNoLocalHandle). REQUIRES: no other thread uses it.
void CloseLocal(LocalHandle h);

// Writes `bytes` to `h` without waiting for the peer (best effort: what does
// not fit at once is dropped). For a short reply just before closing a fresh
// or idle connection ("broker full", a refusal), whose buffer takes it whole.
// Safe on a handle an Asio stream owns (on Windows the write's completion
// does not go to the io_context's completion port).
void WriteNow(LocalHandle h, std::string_view bytes);

// Ends both directions of `h` without closing it, from any thread: a read or
// write blocked on it in another thread returns kBrokerUnavailable at once
// and so does every later one (shutdown(SHUT_RDWR); on Windows the handle is
// marked and its pending I/O cancelled). The peer sees the connection end.
void ShutdownLocal(LocalHandle h);

inline constexpr std::size_t kMaxLocalFrame = 64 * 1024;
inline constexpr std::size_t kFrameHeaderBytes = 4;

using Deadline = std::chrono::steady_clock::time_point;

// Connects a blocking Unix stream socket (Windows: the pipe) to `path`. kBrokerUnavailable names
// the path and the OS error. Checks nothing about the peer and may block
// while the listener's backlog is full: for the broker's own probe of its
// socket and tests; clients and dsbctl use ConnectBroker.
Result<LocalHandle> ConnectLocal(const std::string& path);

// As above, but never waits past `deadline`: a listener whose backlog is full
// (a broker that does not accept) is retried until then, then kTimeout naming
// the path (on Windows: every instance of the pipe is busy, ERROR_PIPE_BUSY).
// The returned descriptor is blocking.
Result<LocalHandle> ConnectLocal(const std::string& path, Deadline deadline);

// ---- Who may answer on the broker's socket (issue 9) ------------------------
// Whoever can write the socket's folder can put a listener of its own at the
// path. A client or dsbctl believes the peer only if the kernel says
// (SO_PEERCRED; on Windows the pipe server's process token) it runs as root
// (LocalSystem), as the caller's effective uid (user SID), as the
// default broker user of this build if that user exists, or as the broker
// user the application named; it checks that before it sends a byte.

// The broker's account trusted without being named (the CMake cache variable
// DSB_DEFAULT_BROKER_USER, "dsb" by default: the package's unit runs the
// broker as that user), but only if a user of that name exists on this
// machine: only root makes accounts, so a name that resolves to no user adds
// nothing. Empty: no default. Empty by default on Windows: the service runs
// as LocalSystem, and a name would resolve through the domain as well.
extern const char* const kDefaultBrokerUser;

// The environment variable read when the application names no broker user:
// a user name or a decimal uid (on Windows a user name or a SID string).
inline constexpr const char* kBrokerUserEnv = "DSB_BROKER_USER";

// Field names from SO_PEERCRED; on Windows uid is the user SID and gid the
// token's primary group SID.
struct PeerCredentials {
  ProcessId pid = 0;
  AccountId uid{};
  GroupId gid{};
};

// The credentials of the process that made (bound/connected) the other end
// of `fd`, from SO_PEERCRED. kInternal if the kernel gives none.
// On Windows (a client's end of the pipe): the server's process id
// (GetNamedPipeServerProcessId, for messages) and as uid the pipe object's
// owner SID, which only its creator (or a holder of SeRestorePrivilege) can
// make be some other account (the broker sets itself: a pid may be reused
// before its token is read). If the server's token can be read (not a
// LocalSystem service seen by an ordinary user) and its user is not the
// owner: kPermissionDenied naming both.
Result<PeerCredentials> GetPeerCredentials(LocalHandle fd);

struct BrokerTrust {
  // Trusted besides root and the caller's effective uid. nullopt: none.
  std::optional<AccountId> broker_uid;
  // The default broker user's uid, if that user exists; trusted as well.
  std::optional<AccountId> default_uid;
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

// "uid 1001 (mallory)", or "uid 1001" if the uid has no name
// (DescribeAccount, common/account.h).
inline std::string DescribeUid(const AccountId& uid) { return DescribeAccount(uid); }

// OK if `peer` is trusted by `trust`; else kPermissionDenied naming the
// socket `path`, the peer's pid and uid (with its name) and how to trust it.
Status CheckBrokerPeer(const PeerCredentials& peer, const std::string& path,
                       const BrokerTrust& trust);

struct BrokerConnection {
  LocalHandle fd = kNoLocalHandle;  // blocking; the caller closes it (CloseLocal)
  PeerCredentials peer;  // the broker's credentials (uid: the owner its segments must have)
};

// ConnectLocal(path, deadline), then CheckBrokerPeer; nothing is sent. On a
// refused peer the descriptor is closed and kPermissionDenied returned.
Result<BrokerConnection> ConnectBroker(const std::string& path, const BrokerTrust& trust,
                                       Deadline deadline);

// Writes one frame. kBrokerUnavailable on a closed peer, kProtocol if too big.
// Blocks while the peer does not read: only where that cannot hang a caller.
Status WriteFrame(LocalHandle fd, std::string_view payload);

// As above, but waits for room in the socket at most until `deadline`:
// kTimeout if the peer does not read (`*partial` set if part of the frame
// went out: the stream is then out of step and must be closed).
Status WriteFrame(LocalHandle fd, std::string_view payload, Deadline deadline,
                  bool* partial = nullptr);

// Reads one frame, waiting at most `timeout` (negative = forever).
// kBrokerUnavailable on EOF/error, kTimeout, kProtocol on an oversized length.
Result<std::string> ReadFrame(LocalHandle fd, std::chrono::milliseconds timeout);
// As above, until `deadline` (kTimeout if it has passed before a whole frame).
Result<std::string> ReadFrame(LocalHandle fd, Deadline deadline);

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
