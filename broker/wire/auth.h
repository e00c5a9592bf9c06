// Authentication of broker-to-broker connections with a pre-shared cluster key.
//
// Everything here is a pure state machine over byte frames: no sockets, no
// clock. channel.h runs it over TCP; tests drive it frame by frame.
//
// Handshake (README.md in this folder has the full description):
//
//   client                                              server
//   ClientHello{id_c, hash_c, nonce_c}     seq 0  -->
//                                          <--  seq 0  ServerHello{id_s, hash_s, nonce_s, proof_s}
//   ClientFinish{proof_c}                  seq 1  -->
//                                          <--  seq 1  HandshakeDone  (or ErrorReply)
//
//   T       = SHA-256("dsb-wire v1 transcript" | id_c | hash_c | nonce_c | id_s | hash_s | nonce_s)
//   proof_s = HMAC-SHA256(K, "dsb-wire v1 server proof" | T)
//   proof_c = HMAC-SHA256(K, "dsb-wire v1 client proof" | T)
//   keys    = HKDF-SHA256(ikm=K, salt=nonce_c|nonce_s, info="dsb-wire v1 session keys" | T)
//             -> 32 bytes client-to-server key, 32 bytes server-to-client key
//
// Each side proves it holds K over the other side's fresh nonce, so a recorded
// handshake cannot be replayed. The three hello frames carry a MAC under a key
// derived from K alone (a peer with another key is refused on its first frame);
// from the fourth frame on, every frame's MAC is under the session key of its
// direction. Sequence numbers count 0, 1, 2, ... per direction, and a frame
// whose number is not exactly the next is refused: replayed, reordered,
// dropped, truncated or forged frames all fail with Errc::kAuthFailed, and the
// session then refuses everything (the connection must be closed).
// After both proofs check, each side compares the cluster file hashes; if they
// differ it sends an authenticated ErrorReply and fails with Errc::kConflict
// naming both hashes.
#ifndef DSB_BROKER_WIRE_AUTH_H_
#define DSB_BROKER_WIRE_AUTH_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/wire/codec.h"
#include "broker/wire/format.h"
#include "common/status.h"

namespace dsb::wire {

// The pre-shared cluster key: at least kMinKeyBytes of secret, identical on
// every workstation. The bytes are wiped when the object is destroyed.
// Operators make one with
//   openssl rand -hex 32 > /etc/dsb/cluster.key && chmod 600 /etc/dsb/cluster.key
// Thread rule: immutable after construction; share freely.
class ClusterKey {
 public:
  static constexpr std::size_t kMinKeyBytes = 32;
  static constexpr std::size_t kMaxFileBytes = 4096;

  ClusterKey() = default;  // empty: not usable for a handshake
  ~ClusterKey();
  ClusterKey(const ClusterKey&) = default;
  ClusterKey& operator=(const ClusterKey&) = default;
  ClusterKey(ClusterKey&&) noexcept = default;
  ClusterKey& operator=(ClusterKey&&) noexcept = default;

  // Success: a key of exactly `raw` (at least kMinKeyBytes).
  // Failure: kConfig if it is shorter.
  static Result<ClusterKey> FromBytes(ByteView raw);

  // Parses key file contents. If the contents, less trailing whitespace, are
  // only hex digits they are decoded as hex; otherwise the bytes are the key.
  // Success: a key of at least kMinKeyBytes. Failure: kConfig naming `source`
  // (odd number of hex digits, too short, too long).
  static Result<ClusterKey> Parse(ByteView contents, std::string_view source);

  // Reads and parses a key file.
  // Failure: kConfig if it cannot be opened, is not a regular file, is owned
  // by a user other than root and the process's effective uid (the message
  // names the owner and says to chown it), is larger than kMaxFileBytes, or
  // is readable or writable by group or others (mode & 077; the message says
  // to run `chmod 600 <path>`); as Parse().
  static Result<ClusterKey> LoadFile(const std::filesystem::path& path);

  bool empty() const { return bytes_.empty(); }
  ByteView bytes() const { return bytes_; }

 private:
  explicit ClusterKey(Bytes bytes) : bytes_(std::move(bytes)) {}
  Bytes bytes_;
};

// What one side of a connection presents and accepts.
struct Credentials {
  ClusterKey key;
  std::string broker_id;     // this broker's id from the cluster file
  std::string cluster_hash;  // printable digest of the cluster file, e.g. hex SHA-256
  // The largest payload this side accepts; between kMinPayloadCap and
  // kMaxPayloadBytes. Frames over it are refused before they are read.
  std::size_t max_payload = kMaxPayloadBytes;
  // Lease channels (R1, R3): a peer with a different cluster file is accepted
  // here, and the lease layer decides (refuse it, or step down for a newer
  // generation); peer().cluster_hash tells. Admin channels keep the refusal.
  bool accept_other_file = false;
};

// OK if `credentials` can be used for a handshake; kInvalidArgument naming the
// field otherwise (empty key, bad broker id or hash, max_payload out of range).
Status ValidateCredentials(const Credentials& credentials);

// HMAC-SHA256 of `data` under `key`.
Proof HmacSha256(ByteView key, ByteView data);

// A fresh random nonce from the system CSPRNG (broker/crypto/crypto.h). Aborts (DSB_CHECK) if the
// CSPRNG fails: no handshake is safe without one.
Nonce RandomNonce();

// One direction-keyed, sequence-checked half-duplex pair: seals frames this
// side sends, opens frames it receives. Made by a finished Handshake.
//
// Invariants:
//   1. send_sequence() and receive_sequence() only grow, by one per frame.
//   2. After any Open failure, failed() is true and every later Open and Seal
//      is refused: the caller must close the connection.
// Thread rule: not thread-safe. Seal and Open touch disjoint state, so one
// sender and one receiver may use it from the same strand.
class Session {
 public:
  Session() = default;  // failed: refuses everything

  // Success: one whole frame (header, payload, MAC) carrying `message` with
  // the next send sequence number. Failure: kInvalidArgument if the message
  // breaks an encoding rule or its payload exceeds max_payload (nothing is
  // consumed; the session stays usable); kAuthFailed if the session failed.
  Result<Bytes> Seal(const Message& message);

  // Success: the message in `frame` (exactly one frame).
  // Failure (the session fails for good): kProtocol for a malformed header or
  // payload or a handshake type; kAuthFailed for a MAC that does not verify
  // (forged, corrupted, other key), a frame shorter or longer than its header
  // says (truncated, extended) or a sequence number other than the next
  // (replayed, reordered, dropped).
  Result<Message> Open(ByteView frame);

  bool failed() const { return failed_; }
  std::size_t max_payload() const { return max_payload_; }
  std::uint64_t send_sequence() const { return send_seq_; }
  std::uint64_t receive_sequence() const { return recv_seq_; }

 private:
  friend class Handshake;
  Session(Proof send_key, Proof receive_key, std::uint64_t send_seq, std::uint64_t recv_seq,
          std::size_t max_payload);
  // Seal/Open of any payload; used by the handshake for HandshakeDone.
  Result<Bytes> SealPayload(MessageType type, ByteView payload);
  Result<FrameView> OpenFrame(ByteView frame);
  Status Fail(Status status);

  Proof send_key_{};
  Proof recv_key_{};
  std::uint64_t send_seq_ = 0;
  std::uint64_t recv_seq_ = 0;
  std::size_t max_payload_ = kMaxPayloadBytes;
  bool failed_ = true;
};

// What the handshake learned about the peer (valid once done()).
struct PeerIdentity {
  std::string broker_id;
  std::string cluster_hash;
};

// The mutual challenge-response handshake of one connection, one role.
// Drive it: the client calls Start(); then each side passes every whole frame
// it receives to OnFrame() and, after every call (success or failure), sends
// the frames TakeOutgoing() returns, in order. On failure it closes the
// connection after sending them. done() turns true on success; then
// TakeSession() gives the data-phase Session.
// Thread rule: not thread-safe; one connection's strand.
class Handshake {
 public:
  enum class Role { kClient, kServer };

  // REQUIRES: ValidateCredentials(credentials).ok().
  // `nonce` is this side's challenge; tests pass a fixed one, everyone else a
  // RandomNonce().
  Handshake(Role role, Credentials credentials, const Nonce& nonce);
  static Handshake Client(Credentials credentials);
  static Handshake Server(Credentials credentials);

  // Client only: queues the ClientHello. REQUIRES: called once, first.
  void Start();

  // Feeds one whole frame from the peer.
  // Success: the step was valid (check done()).
  // Failure (the handshake is over; close after sending TakeOutgoing()):
  //   kProtocol: malformed or unexpected frame, or a frame after done();
  //   kAuthFailed: a MAC or proof that does not verify (the peer does not hold
  //     the cluster key, or replays an old handshake), or a wrong sequence
  //     number; the peer is sent nothing;
  //   kConflict: the peer runs another cluster file (both hashes named); the
  //     peer is sent an authenticated ErrorReply saying so;
  //   any code the peer's authenticated ErrorReply names (client side).
  Status OnFrame(ByteView frame);

  // Frames to send now, in order; empties the queue.
  std::vector<Bytes> TakeOutgoing();

  bool done() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kFailed; }
  // Valid after the peer's hello was read (and authenticated).
  const PeerIdentity& peer() const { return peer_; }
  std::size_t max_payload() const { return credentials_.max_payload; }

  // REQUIRES: done(). Moves the session out; call once.
  Session TakeSession();

 private:
  enum class State { kStart, kAwaitServerHello, kAwaitClientHello, kAwaitFinish, kAwaitDone,
                     kDone, kFailed };

  Status OnClientHello(const FrameView& frame);
  Status OnServerHello(const FrameView& frame);
  Status OnClientFinish(const FrameView& frame);
  Status OnDone(ByteView frame);
  // Verifies a hello-phase frame: its type, its MAC under the hello key and
  // its sequence number; decodes it.
  Result<HandshakeMessage> OpenHello(const FrameView& frame, MessageType want);
  void QueueHello(const HandshakeMessage& message);
  // Compares the cluster hashes; on a mismatch queues an ErrorReply.
  Status CheckClusterHash();
  void DeriveSessionAndProofs(const std::string& client_id, const std::string& client_hash,
                              const Nonce& client_nonce, const std::string& server_id,
                              const std::string& server_hash, const Nonce& server_nonce);
  Status Fail(Status status);

  Role role_;
  Credentials credentials_;
  Nonce nonce_;
  Proof hello_key_{};
  Proof client_proof_{};
  Proof server_proof_{};
  std::uint64_t hello_send_seq_ = 0;
  std::uint64_t hello_recv_seq_ = 0;
  State state_;
  PeerIdentity peer_;
  std::optional<Session> session_;
  std::vector<Bytes> outgoing_;
};

}  // namespace dsb::wire

#endif  // DSB_BROKER_WIRE_AUTH_H_
