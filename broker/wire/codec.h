// Strict binary encoding of wire frames and messages (format.h has the layout).
//
// Encoding: little-endian integers, strings as a length prefix then bytes
// (u16 for ids, hashes and error text; u32 for admin JSON), lists as a u16 count
// then items, booleans as one byte 0 or 1, durations as i64 nanoseconds >= 0.
// The encoding is canonical: a payload that decodes re-encodes to the same bytes.
//
// Decoding never trusts a length or count: each is checked against its bound and
// against the bytes left before anything is allocated, and a payload must be
// consumed exactly (trailing bytes are refused). Every refusal is a Status with
// Errc::kProtocol naming the field and what is wrong. No input is undefined
// behaviour (fuzzed by tests/fuzz/wire_decode_fuzz.cc).
//
// Thread rule: free functions without shared state; safe from any thread.
#ifndef DSB_BROKER_WIRE_CODEC_H_
#define DSB_BROKER_WIRE_CODEC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "broker/lease/messages.h"
#include "broker/wire/format.h"
#include "common/status.h"

namespace dsb::wire {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;
using Nonce = std::array<std::uint8_t, kNonceSize>;
using Proof = std::array<std::uint8_t, kProofSize>;

// ---- Handshake messages (auth.h drives them) ----

// Client -> server, first frame: who I am, which cluster file I run, a fresh nonce.
struct ClientHello {
  std::string broker_id;     // 1..kMaxIdBytes of UTF-8, no control characters
  std::string cluster_hash;  // 1..kMaxClusterHashBytes of printable ASCII
  Nonce nonce{};
  bool operator==(const ClientHello&) const = default;
};

// Server -> client: the same, plus proof that the server holds the key.
struct ServerHello {
  std::string broker_id;
  std::string cluster_hash;
  Nonce nonce{};
  Proof proof{};
  bool operator==(const ServerHello&) const = default;
};

// Client -> server: proof that the client holds the key.
struct ClientFinish {
  Proof proof{};
  bool operator==(const ClientFinish&) const = default;
};

// Server -> client, first frame under the session key: the server accepts.
struct HandshakeDone {
  bool operator==(const HandshakeDone&) const = default;
};

using HandshakeMessage = std::variant<ClientHello, ServerHello, ClientFinish, HandshakeDone>;

// ---- Messages after the handshake ----

// dsbctl through a broker: a JSON object as UTF-8 text (not parsed here).
struct AdminRequest {
  std::string json;  // 1..kMaxAdminJsonBytes of UTF-8
  bool operator==(const AdminRequest&) const = default;
};
struct AdminReply {
  std::string json;
  bool operator==(const AdminReply&) const = default;
};

// A refusal: an error code (any non-zero value, so newer codes pass through)
// and a UTF-8 message of at most kMaxErrorMessageBytes without control
// characters (it is logged as it is).
struct ErrorReply {
  Errc code = Errc::kInternal;
  std::string message;
  bool operator==(const ErrorReply&) const = default;
};

// R3: a coordinator says hello to every broker of its cluster file.
struct CoordinatorHello {
  std::string coordinator_id;   // an id
  std::uint64_t generation = 0;
  std::string file_hash;        // printable, 1..kMaxClusterHashBytes
  std::string address;          // where it listens, "host:port" (<= kMaxAddressBytes, printable)
  bool operator==(const CoordinatorHello&) const = default;
};

// The broker's answer. A coordinator of an older generation stops granting,
// persists "superseded" and then answers with stopped = true and its
// acceptance records (the hand-over). conflict = both run a ledger at one
// generation with different files: both stop granting.
struct HelloReply {
  std::string broker_id;
  std::uint64_t generation = 0;
  std::string file_hash;
  std::string coordinator_id;       // the coordinator its file names
  std::string coordinator_address;  // and its address (may be empty)
  bool is_coordinator = false;
  bool stopped = false;
  bool conflict = false;
  std::vector<lease::AcceptanceRecord> records;
  bool operator==(const HelloReply&) const = default;
};

using Message = std::variant<lease::RenewRequest, lease::Grant, AdminRequest, AdminReply,
                             ErrorReply, lease::RefusalReport, lease::Goodbye, CoordinatorHello,
                             HelloReply, lease::RevokeNotice>;

MessageType TypeOf(const Message& message);
MessageType TypeOf(const HandshakeMessage& message);
// True for the four handshake types.
bool IsHandshakeType(MessageType type);
// "RenewRequest", "ClientHello", ...; "unknown" for a number format.h does not define.
const char* TypeName(MessageType type);

// ---- Payloads ----

// Success: the canonical payload bytes of `message`.
// Failure: kInvalidArgument naming the field if the message breaks a bound or
// rule that decoding enforces (so nothing is sent that the peer would refuse).
Result<Bytes> EncodePayload(const Message& message);
Result<Bytes> EncodePayload(const HandshakeMessage& message);

// Success: the message of `type` that `payload` encodes, exactly.
// Failure: kProtocol naming the field (truncated, overlong length, count over
// its bound, invalid UTF-8, duplicate target, bad boolean, trailing bytes, ...),
// or naming the type if `type` is unknown or of the other family (a handshake
// type given to DecodeMessage, or the reverse).
Result<Message> DecodeMessage(MessageType type, ByteView payload);
Result<HandshakeMessage> DecodeHandshake(MessageType type, ByteView payload);

// ---- Frames ----

struct FrameHeader {
  MessageType type = MessageType::kErrorReply;
  std::uint32_t flags = 0;
  std::uint64_t sequence = 0;
  std::uint32_t length = 0;  // payload bytes
  bool operator==(const FrameHeader&) const = default;
};

// Appends the kHeaderSize bytes of `header` (with kMagic and kVersion) to `out`.
void AppendHeader(const FrameHeader& header, Bytes* out);

// Success: the header in `bytes` (exactly kHeaderSize of them).
// Failure: kProtocol for a wrong size, bad magic, a version other than
// kVersion, unknown flags, an unknown type, or a length over `max_payload`.
// REQUIRES: max_payload <= kMaxPayloadBytes.
Result<FrameHeader> DecodeHeader(ByteView bytes, std::size_t max_payload);

// One whole frame, split into its parts (views into the caller's bytes).
struct FrameView {
  FrameHeader header;
  ByteView authenticated;  // header + payload: what the MAC covers
  ByteView payload;
  ByteView mac;
};

// Success: `frame` is exactly one frame (header, header.length payload bytes,
// kMacSize MAC bytes). The MAC is not checked here (auth.h does that).
// Failure: kProtocol as DecodeHeader, or when `frame` is shorter (truncated)
// or longer (trailing bytes) than the header says.
Result<FrameView> SplitFrame(ByteView frame, std::size_t max_payload);

// ---- Field rules, shared by encoder and decoder (exposed for callers that
// validate ids before they reach the wire, e.g. config loading) ----

// OK if `value` is a valid broker id or target name. kProtocol otherwise,
// naming `field` and the reason.
Status CheckId(std::string_view field, std::string_view value);
// OK if `value` is a valid cluster file hash: 1..kMaxClusterHashBytes of
// printable ASCII. kProtocol otherwise, naming `field`.
Status CheckClusterHash(std::string_view field, std::string_view value);
// OK if `bytes` is well-formed UTF-8 (no overlongs, surrogates or code points
// above U+10FFFF).
bool IsValidUtf8(std::string_view bytes);

}  // namespace dsb::wire

#endif  // DSB_BROKER_WIRE_CODEC_H_
