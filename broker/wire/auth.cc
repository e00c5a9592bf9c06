#include "broker/wire/auth.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "broker/crypto/crypto.h"
#include "broker/secure_fs.h"
#include "common/check.h"
#include "common/hex.h"

namespace dsb::wire {
namespace {

constexpr std::string_view kHelloLabel = "dsb-wire v1 hello mac";
constexpr std::string_view kTranscriptLabel = "dsb-wire v1 transcript";
constexpr std::string_view kServerProofLabel = "dsb-wire v1 server proof";
constexpr std::string_view kClientProofLabel = "dsb-wire v1 client proof";
constexpr std::string_view kSessionLabel = "dsb-wire v1 session keys";

ByteView AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void Append(Bytes* out, ByteView bytes) { out->insert(out->end(), bytes.begin(), bytes.end()); }

// A u16 length, then the bytes: keeps transcript fields unambiguous.
void AppendField(Bytes* out, std::string_view s) {
  DSB_CHECK(s.size() <= 0xffff, "transcript field of %zu bytes", s.size());
  out->push_back(static_cast<std::uint8_t>(s.size() & 0xff));
  out->push_back(static_cast<std::uint8_t>(s.size() >> 8));
  Append(out, AsBytes(s));
}

Proof Sha256(ByteView data) { return crypto::Sha256(data); }

// HKDF-SHA256 (RFC 5869) through the crypto seam (broker/crypto/crypto.h).
void Hkdf(ByteView ikm, ByteView salt, ByteView info, std::uint8_t* out, std::size_t out_len) {
  crypto::HkdfSha256(ikm, salt, info, std::span<std::uint8_t>(out, out_len));
}

bool SameMac(ByteView a, ByteView b) { return crypto::ConstantTimeEqual(a, b); }

}  // namespace

// ---- ClusterKey ----

ClusterKey::~ClusterKey() {
  crypto::Cleanse(bytes_);
}

Result<ClusterKey> ClusterKey::FromBytes(ByteView raw) {
  if (raw.size() < kMinKeyBytes) {
    return Status(Errc::kConfig, "cluster key has " + std::to_string(raw.size()) +
                                     " bytes; at least " + std::to_string(kMinKeyBytes) +
                                     " are needed (make one with `openssl rand -hex 32`)");
  }
  return ClusterKey(Bytes(raw.begin(), raw.end()));
}

Result<ClusterKey> ClusterKey::Parse(ByteView contents, std::string_view source) {
  const std::string where(source);
  if (contents.size() > kMaxFileBytes) {
    return Status(Errc::kConfig, where + ": key file is larger than " +
                                     std::to_string(kMaxFileBytes) + " bytes");
  }
  std::size_t end = contents.size();
  const auto is_space = [](std::uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (end > 0 && is_space(contents[end - 1])) --end;
  const ByteView trimmed = contents.first(end);
  const bool all_hex = !trimmed.empty() && std::all_of(trimmed.begin(), trimmed.end(), [](auto c) {
    return HexValue(static_cast<char>(c)) >= 0;
  });
  if (!all_hex) {
    Result<ClusterKey> key = FromBytes(contents);
    if (!key.ok()) return Status(Errc::kConfig, where + ": " + key.status().message());
    return key;
  }
  if (trimmed.size() % 2 != 0) {
    return Status(Errc::kConfig, where + ": hex key has an odd number of digits (" +
                                     std::to_string(trimmed.size()) + ")");
  }
  Bytes decoded(trimmed.size() / 2);
  for (std::size_t i = 0; i < decoded.size(); ++i) {
    decoded[i] = static_cast<std::uint8_t>(HexValue(static_cast<char>(trimmed[2 * i])) * 16 +
                                           HexValue(static_cast<char>(trimmed[2 * i + 1])));
  }
  Result<ClusterKey> key = FromBytes(decoded);
  crypto::Cleanse(decoded);
  if (!key.ok()) return Status(Errc::kConfig, where + ": hex " + key.status().message());
  return key;
}

Result<ClusterKey> ClusterKey::LoadFile(const std::filesystem::path& path) {
  const std::string name = path.string();
  // Opened and checked by the platform's rules (secure_fs.h: owner, mode or
  // ACL, size); Linux messages as before this moved there.
  Result<Bytes> contents = broker::ReadSecretFile(path, "cluster key file", kMaxFileBytes);
  if (!contents.ok()) return contents.status();
  Result<ClusterKey> key = Parse(*contents, name);
  crypto::Cleanse(*contents);
  return key;
}

Status ValidateCredentials(const Credentials& c) {
  if (c.key.bytes().size() < ClusterKey::kMinKeyBytes) {
    return Status(Errc::kInvalidArgument, "credentials: no cluster key loaded");
  }
  if (Status s = CheckId("credentials.broker_id", c.broker_id); !s.ok()) {
    return Status(Errc::kInvalidArgument, s.message());
  }
  if (Status s = CheckClusterHash("credentials.cluster_hash", c.cluster_hash); !s.ok()) {
    return Status(Errc::kInvalidArgument, s.message());
  }
  if (c.max_payload < kMinPayloadCap || c.max_payload > kMaxPayloadBytes) {
    return Status(Errc::kInvalidArgument,
                  "credentials.max_payload: " + std::to_string(c.max_payload) +
                      " is outside [" + std::to_string(kMinPayloadCap) + ", " +
                      std::to_string(kMaxPayloadBytes) + "]");
  }
  return Status::Ok();
}

Proof HmacSha256(ByteView key, ByteView data) { return crypto::HmacSha256(key, data); }

Nonce RandomNonce() {
  Nonce n{};
  DSB_CHECK(crypto::RandomBytes(n), "the system CSPRNG failed");
  return n;
}

// ---- Session ----

Session::Session(Proof send_key, Proof receive_key, std::uint64_t send_seq, std::uint64_t recv_seq,
                 std::size_t max_payload)
    : send_key_(send_key),
      recv_key_(receive_key),
      send_seq_(send_seq),
      recv_seq_(recv_seq),
      max_payload_(max_payload),
      failed_(false) {}

Status Session::Fail(Status status) {
  failed_ = true;
  crypto::Cleanse(send_key_);
  crypto::Cleanse(recv_key_);
  return status;
}

Result<Bytes> Session::SealPayload(MessageType type, ByteView payload) {
  if (failed_) return Status(Errc::kAuthFailed, "session closed after an earlier failure");
  if (payload.size() > max_payload_) {
    return Status(Errc::kInvalidArgument,
                  std::string(TypeName(type)) + ": payload of " + std::to_string(payload.size()) +
                      " bytes exceeds the limit of " + std::to_string(max_payload_));
  }
  DSB_CHECK(send_seq_ < std::numeric_limits<std::uint64_t>::max(), "sequence numbers exhausted");
  Bytes frame;
  frame.reserve(kHeaderSize + payload.size() + kMacSize);
  AppendHeader({type, 0, send_seq_, static_cast<std::uint32_t>(payload.size())}, &frame);
  Append(&frame, payload);
  const Proof mac = HmacSha256(send_key_, frame);
  Append(&frame, mac);
  ++send_seq_;
  return frame;
}

Result<Bytes> Session::Seal(const Message& message) {
  Result<Bytes> payload = EncodePayload(message);
  if (!payload.ok()) return payload.status();
  return SealPayload(TypeOf(message), *payload);
}

Result<FrameView> Session::OpenFrame(ByteView frame) {
  if (failed_) return Status(Errc::kAuthFailed, "session closed after an earlier failure");
  // A bad header is garbage (kProtocol); a good header on the wrong number of
  // bytes is a frame cut or extended in transit (kAuthFailed, like a bad MAC).
  if (frame.size() < kHeaderSize) {
    return Fail(Status(Errc::kAuthFailed, "frame truncated: " + std::to_string(frame.size()) +
                                              " bytes, shorter than a header"));
  }
  Result<FrameHeader> header = DecodeHeader(frame.first(kHeaderSize), max_payload_);
  if (!header.ok()) return Fail(header.status());
  Result<FrameView> view = SplitFrame(frame, max_payload_);
  if (!view.ok()) return Fail(Status(Errc::kAuthFailed, view.status().message()));
  if (!SameMac(HmacSha256(recv_key_, view->authenticated), view->mac)) {
    return Fail(Status(Errc::kAuthFailed,
                       "frame MAC does not verify (forged, corrupted or truncated frame)"));
  }
  if (view->header.sequence != recv_seq_) {
    return Fail(Status(Errc::kAuthFailed,
                       "frame sequence number " + std::to_string(view->header.sequence) +
                           ", expected " + std::to_string(recv_seq_) +
                           " (replayed, reordered or dropped frame)"));
  }
  ++recv_seq_;
  return view;
}

Result<Message> Session::Open(ByteView frame) {
  Result<FrameView> view = OpenFrame(frame);
  if (!view.ok()) return view.status();
  Result<Message> message = DecodeMessage(view->header.type, view->payload);
  if (!message.ok()) return Fail(message.status());
  return message;
}

// ---- Handshake ----

Handshake::Handshake(Role role, Credentials credentials, const Nonce& nonce)
    : role_(role),
      credentials_(std::move(credentials)),
      nonce_(nonce),
      state_(role == Role::kClient ? State::kStart : State::kAwaitClientHello) {
  const Status valid = ValidateCredentials(credentials_);
  DSB_CHECK(valid.ok(), "%s", valid.message().c_str());
  Hkdf(credentials_.key.bytes(), {}, AsBytes(kHelloLabel), hello_key_.data(), hello_key_.size());
}

Handshake Handshake::Client(Credentials credentials) {
  return Handshake(Role::kClient, std::move(credentials), RandomNonce());
}

Handshake Handshake::Server(Credentials credentials) {
  return Handshake(Role::kServer, std::move(credentials), RandomNonce());
}

Status Handshake::Fail(Status status) {
  state_ = State::kFailed;
  return status;
}

void Handshake::QueueHello(const HandshakeMessage& message) {
  Result<Bytes> payload = EncodePayload(message);
  DSB_CHECK(payload.ok(), "%s", payload.status().message().c_str());  // credentials validated
  Bytes frame;
  AppendHeader({TypeOf(message), 0, hello_send_seq_++, static_cast<std::uint32_t>(payload->size())},
               &frame);
  Append(&frame, *payload);
  Append(&frame, HmacSha256(hello_key_, frame));
  outgoing_.push_back(std::move(frame));
}

void Handshake::Start() {
  DSB_CHECK(role_ == Role::kClient && state_ == State::kStart, "Start() is for a new client");
  QueueHello(ClientHello{credentials_.broker_id, credentials_.cluster_hash, nonce_});
  state_ = State::kAwaitServerHello;
}

std::vector<Bytes> Handshake::TakeOutgoing() { return std::exchange(outgoing_, {}); }

Session Handshake::TakeSession() {
  DSB_CHECK(done() && session_.has_value(), "TakeSession() before the handshake is done");
  Session s = std::move(*session_);
  session_.reset();
  return s;
}

Result<HandshakeMessage> Handshake::OpenHello(const FrameView& frame, MessageType want) {
  if (frame.header.type != want) {
    return Status(Errc::kProtocol, std::string("handshake: expected ") + TypeName(want) +
                                       ", got " + TypeName(frame.header.type));
  }
  if (!SameMac(HmacSha256(hello_key_, frame.authenticated), frame.mac)) {
    return Status(Errc::kAuthFailed, std::string("handshake: ") + TypeName(want) +
                                         " MAC does not verify: the peer does not hold this "
                                         "cluster key");
  }
  if (frame.header.sequence != hello_recv_seq_) {
    return Status(Errc::kAuthFailed, std::string("handshake: ") + TypeName(want) +
                                         " has sequence number " +
                                         std::to_string(frame.header.sequence) + ", expected " +
                                         std::to_string(hello_recv_seq_));
  }
  ++hello_recv_seq_;
  return DecodeHandshake(frame.header.type, frame.payload);
}

void Handshake::DeriveSessionAndProofs(const std::string& client_id,
                                       const std::string& client_hash, const Nonce& client_nonce,
                                       const std::string& server_id,
                                       const std::string& server_hash, const Nonce& server_nonce) {
  Bytes t;
  Append(&t, AsBytes(kTranscriptLabel));
  AppendField(&t, client_id);
  AppendField(&t, client_hash);
  Append(&t, client_nonce);
  AppendField(&t, server_id);
  AppendField(&t, server_hash);
  Append(&t, server_nonce);
  const Proof transcript = Sha256(t);

  const auto proof = [&](std::string_view label) {
    Bytes m;
    Append(&m, AsBytes(label));
    Append(&m, transcript);
    return HmacSha256(credentials_.key.bytes(), m);
  };
  server_proof_ = proof(kServerProofLabel);
  client_proof_ = proof(kClientProofLabel);

  Bytes salt;
  Append(&salt, client_nonce);
  Append(&salt, server_nonce);
  Bytes info;
  Append(&info, AsBytes(kSessionLabel));
  Append(&info, transcript);
  std::array<std::uint8_t, 2 * kMacSize> keys{};
  Hkdf(credentials_.key.bytes(), salt, info, keys.data(), keys.size());
  Proof c2s{};
  Proof s2c{};
  std::copy_n(keys.begin(), kMacSize, c2s.begin());
  std::copy_n(keys.begin() + kMacSize, kMacSize, s2c.begin());
  crypto::Cleanse(keys);
  // Sequence numbers continue the hello frames: the client has sent 0 and 1
  // (hello, finish) and reads HandshakeDone as 1; the server sends it as 1.
  if (role_ == Role::kClient) {
    session_ = Session(c2s, s2c, 2, 1, credentials_.max_payload);
  } else {
    session_ = Session(s2c, c2s, 1, 2, credentials_.max_payload);
  }
}

Status Handshake::CheckClusterHash() {
  if (peer_.cluster_hash == credentials_.cluster_hash || credentials_.accept_other_file) {
    return Status::Ok();
  }
  const std::string text = "cluster file differs: broker '" + credentials_.broker_id +
                           "' has hash " + credentials_.cluster_hash + ", peer '" +
                           peer_.broker_id + "' has hash " + peer_.cluster_hash +
                           "; install the same cluster file on every workstation";
  Result<Bytes> frame = session_->Seal(ErrorReply{Errc::kConflict, text});
  if (frame.ok()) outgoing_.push_back(std::move(*frame));
  return Fail(Status(Errc::kConflict, text));
}

Status Handshake::OnServerHello(const FrameView& frame) {
  Result<HandshakeMessage> m = OpenHello(frame, MessageType::kServerHello);
  if (!m.ok()) return Fail(m.status());
  const auto& hello = std::get<ServerHello>(*m);
  DeriveSessionAndProofs(credentials_.broker_id, credentials_.cluster_hash, nonce_,
                         hello.broker_id, hello.cluster_hash, hello.nonce);
  if (!SameMac(server_proof_, hello.proof)) {
    return Fail(Status(Errc::kAuthFailed,
                       "handshake: the server's proof does not verify (a replayed or forged "
                       "ServerHello)"));
  }
  peer_ = {hello.broker_id, hello.cluster_hash};
  QueueHello(ClientFinish{client_proof_});
  if (Status s = CheckClusterHash(); !s.ok()) return s;
  state_ = State::kAwaitDone;
  return Status::Ok();
}

Status Handshake::OnClientHello(const FrameView& frame) {
  Result<HandshakeMessage> m = OpenHello(frame, MessageType::kClientHello);
  if (!m.ok()) {
    // Name the broker the refused hello claims to be (unauthenticated, but a
    // valid id): it tells the operator which workstation has the wrong key.
    Result<HandshakeMessage> claim = DecodeHandshake(frame.header.type, frame.payload);
    if (claim.ok() && std::holds_alternative<ClientHello>(*claim)) {
      return Fail(Status(m.status().code(), m.status().message() + " (hello claims broker '" +
                                                std::get<ClientHello>(*claim).broker_id + "')"));
    }
    return Fail(m.status());
  }
  const auto& hello = std::get<ClientHello>(*m);
  peer_ = {hello.broker_id, hello.cluster_hash};
  DeriveSessionAndProofs(hello.broker_id, hello.cluster_hash, hello.nonce,
                         credentials_.broker_id, credentials_.cluster_hash, nonce_);
  QueueHello(ServerHello{credentials_.broker_id, credentials_.cluster_hash, nonce_, server_proof_});
  state_ = State::kAwaitFinish;
  return Status::Ok();
}

Status Handshake::OnClientFinish(const FrameView& frame) {
  Result<HandshakeMessage> m = OpenHello(frame, MessageType::kClientFinish);
  if (!m.ok()) return Fail(m.status());
  if (!SameMac(client_proof_, std::get<ClientFinish>(*m).proof)) {
    return Fail(Status(Errc::kAuthFailed,
                       "handshake: the client's proof does not verify (a replayed or forged "
                       "ClientFinish)"));
  }
  if (Status s = CheckClusterHash(); !s.ok()) return s;
  Result<Bytes> done = session_->SealPayload(MessageType::kHandshakeDone, {});
  DSB_CHECK(done.ok(), "%s", done.status().message().c_str());
  outgoing_.push_back(std::move(*done));
  state_ = State::kDone;
  return Status::Ok();
}

Status Handshake::OnDone(ByteView frame) {
  Result<FrameView> view = session_->OpenFrame(frame);
  if (!view.ok()) return Fail(view.status());
  if (view->header.type == MessageType::kHandshakeDone) {
    Result<HandshakeMessage> m = DecodeHandshake(view->header.type, view->payload);
    if (!m.ok()) return Fail(m.status());
    state_ = State::kDone;
    return Status::Ok();
  }
  if (view->header.type == MessageType::kErrorReply) {
    Result<Message> m = DecodeMessage(view->header.type, view->payload);
    if (!m.ok()) return Fail(m.status());
    const auto& error = std::get<ErrorReply>(*m);
    return Fail(Status(error.code, "peer '" + peer_.broker_id + "' refused: " + error.message));
  }
  return Fail(Status(Errc::kProtocol, std::string("handshake: expected HandshakeDone, got ") +
                                          TypeName(view->header.type)));
}

Status Handshake::OnFrame(ByteView frame) {
  switch (state_) {
    case State::kDone:
      return Fail(Status(Errc::kProtocol, "handshake: a frame after the handshake finished"));
    case State::kFailed:
      return Status(Errc::kProtocol, "handshake: already failed");
    case State::kStart:
      return Fail(Status(Errc::kProtocol, "handshake: a frame before Start()"));
    case State::kAwaitDone:
      return OnDone(frame);
    default:
      break;
  }
  Result<FrameView> view = SplitFrame(frame, credentials_.max_payload);
  if (!view.ok()) return Fail(view.status());
  switch (state_) {
    case State::kAwaitServerHello: return OnServerHello(*view);
    case State::kAwaitClientHello: return OnClientHello(*view);
    case State::kAwaitFinish: return OnClientFinish(*view);
    default: break;
  }
  DSB_CHECK(false, "unreachable handshake state");
  return Status(Errc::kInternal, "unreachable");
}

}  // namespace dsb::wire
