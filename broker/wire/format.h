// The dsb broker-to-broker wire format: every constant that reaches the wire.
//
// A frame is
//
//   +-------+---------+------+-------+----------+--------+---------+--------+
//   | magic | version | type | flags | sequence | length | payload |  MAC   |
//   |  u32  |   u16   | u16  |  u32  |   u64    |  u32   | length  | 32 B   |
//   +-------+---------+------+-------+----------+--------+---------+--------+
//    \________________ header: kHeaderSize = 24 bytes ____/
//
// All integers are little-endian. The MAC is HMAC-SHA256 over header and
// payload (see auth.h for the key). README.md in this folder describes the
// handshake and replay protection.
//
// NEVER renumber, resize or reuse anything in this file: brokers of different
// builds talk to each other. Add new message types with new numbers; a change
// to the frame layout or a message's encoding needs a new kVersion.
#ifndef DSB_BROKER_WIRE_FORMAT_H_
#define DSB_BROKER_WIRE_FORMAT_H_

#include <cstddef>
#include <cstdint>

namespace dsb::wire {

// "DSBW" read as a little-endian u32: the bytes on the wire are 'D' 'S' 'B' 'W'.
inline constexpr std::uint32_t kMagic = 0x57425344;
// 2: epoch + instance + generation + file hash in renews and grants, verdicts,
// Goodbye, CoordinatorHello/HelloReply (DESIGN section 7, R0-R5). A version-1
// peer is refused by the frame header check, naming both versions.
inline constexpr std::uint16_t kVersion = 2;

inline constexpr std::size_t kHeaderSize = 24;  // magic..length above
inline constexpr std::size_t kMacSize = 32;     // HMAC-SHA256

// The largest payload any build accepts. A deployment may configure a lower
// cap (Credentials::max_payload); never a higher one.
inline constexpr std::size_t kMaxPayloadBytes = 64 * 1024;
// The smallest cap one may configure: a handshake must still fit.
inline constexpr std::size_t kMinPayloadCap = 1024;

// No flag is defined in version 1: a frame with any flag bit set is refused.
inline constexpr std::uint32_t kKnownFlags = 0;

// Message type numbers. Never renumber; never reuse a retired number.
enum class MessageType : std::uint16_t {
  // Handshake (before the session key exists), see auth.h.
  kClientHello = 1,
  kServerHello = 2,
  kClientFinish = 3,
  kHandshakeDone = 4,
  // Lease protocol (DESIGN section 7), see broker/lease/messages.h.
  kRenewRequest = 16,
  kGrant = 17,
  kRefusalReport = 18,  // limit discovery (DESIGN section 8); no reply
  kGoodbye = 19,        // R5: a clean stop; no reply
  kCoordinatorHello = 20,  // R3: a coordinator to every broker of its file
  kHelloReply = 21,        // R3: the broker's answer (and a stopped coordinator's hand-over)
  // C2: coordinator -> broker after revoke/drain/undrain/a lowered limit:
  // "renew now". Sent only to a broker that announced it reads it (an admin
  // request {"op": "notices"} on its renew channel, cluster_admin.h): a build
  // before this type refuses a frame of an unknown type and drops the channel.
  kRevokeNotice = 22,
  // Administration (dsbctl through a broker): UTF-8 JSON text.
  kAdminRequest = 32,
  kAdminReply = 33,
  // Either side, after the handshake: a refusal naming an Errc.
  kErrorReply = 48,
};

// Bounds that decoding enforces (and encoding checks, so what is sent decodes).
inline constexpr std::size_t kNonceSize = 32;
inline constexpr std::size_t kProofSize = 32;
inline constexpr std::size_t kMaxIdBytes = 128;           // broker ids, target names
inline constexpr std::size_t kMaxClusterHashBytes = 128;  // printable ASCII (hex digest)
inline constexpr std::size_t kMaxTargetsPerMessage = 512;
inline constexpr std::size_t kMaxErrorMessageBytes = 1024;
inline constexpr std::size_t kMaxRecordsPerMessage = 256;  // acceptance records in a hand-over
inline constexpr std::size_t kMaxAddressBytes = 300;       // "host:port"
// Admin JSON text: whatever fits in the largest payload after its u32 length.
inline constexpr std::size_t kMaxAdminJsonBytes = kMaxPayloadBytes - 4;

}  // namespace dsb::wire

#endif  // DSB_BROKER_WIRE_FORMAT_H_
