// libFuzzer entry: the broker wire decoder (broker/wire) on arbitrary bytes.
//
// Properties checked on every input (a violation aborts, which libFuzzer reports):
//   1. Nothing crashes, hangs, leaks or hits undefined behaviour (ASan/UBSan).
//   2. A frame that splits and whose payload decodes re-encodes to exactly
//      the same payload bytes (the encoding is canonical).
//   3. Every refusal is Errc::kProtocol with a message free of control bytes
//      (refusals are logged).
//   4. An unauthenticated frame never gets through a server handshake or an
//      established session: garbage is refused with kProtocol or kAuthFailed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "broker/wire/auth.h"
#include "broker/wire/codec.h"

namespace {

using namespace dsb::wire;

void Require(bool condition) {
  if (!condition) std::abort();
}

void CheckRefusal(const dsb::Status& status) {
  Require(!status.ok());
  Require(status.code() == dsb::Errc::kProtocol || status.code() == dsb::Errc::kAuthFailed);
  for (char c : status.message()) Require(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
}

Credentials Make(const char* id) {
  Credentials c;
  const Bytes raw(32, 0x5a);
  c.key = ClusterKey::FromBytes(raw).value();
  c.broker_id = id;
  c.cluster_hash = "fuzz";
  return c;
}

// A server session after a real handshake, copied fresh for every input.
const Session& ServerSession() {
  static const std::optional<Session> session = [] {
    Nonce a{};
    Nonce b{};
    b.fill(1);
    Handshake client(Handshake::Role::kClient, Make("client"), a);
    Handshake server(Handshake::Role::kServer, Make("server"), b);
    client.Start();
    Require(server.OnFrame(client.TakeOutgoing().at(0)).ok());
    Require(client.OnFrame(server.TakeOutgoing().at(0)).ok());
    Require(server.OnFrame(client.TakeOutgoing().at(0)).ok());
    Require(server.done());
    return std::optional<Session>(server.TakeSession());
  }();
  return *session;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView in(data, size);

  // 1-3: frame split and payload decode, ignoring the MAC.
  dsb::Result<FrameView> frame = SplitFrame(in, kMaxPayloadBytes);
  if (!frame.ok()) {
    CheckRefusal(frame.status());
  } else if (IsHandshakeType(frame->header.type)) {
    dsb::Result<HandshakeMessage> m = DecodeHandshake(frame->header.type, frame->payload);
    if (m.ok()) {
      dsb::Result<Bytes> again = EncodePayload(*m);
      Require(again.ok() && *again == Bytes(frame->payload.begin(), frame->payload.end()));
    } else {
      CheckRefusal(m.status());
    }
  } else {
    dsb::Result<Message> m = DecodeMessage(frame->header.type, frame->payload);
    if (m.ok()) {
      dsb::Result<Bytes> again = EncodePayload(*m);
      Require(again.ok() && *again == Bytes(frame->payload.begin(), frame->payload.end()));
    } else {
      CheckRefusal(m.status());
    }
  }

  // 4: the same bytes as the first frame a server sees, and as a data frame.
  static const Credentials server_credentials = Make("server");
  Handshake server(Handshake::Role::kServer, server_credentials, Nonce{});
  const dsb::Status hello = server.OnFrame(in);
  if (hello.ok()) {
    // Only a hello under the fuzz key (it cannot forge one): answered with one ServerHello.
    Require(server.TakeOutgoing().size() == 1);
  } else {
    CheckRefusal(hello);
    Require(server.TakeOutgoing().empty());  // a refused peer is sent nothing
  }

  Session session = ServerSession();
  dsb::Result<Message> opened = session.Open(in);
  Require(!opened.ok());
  CheckRefusal(opened.status());
  Require(session.failed());
  return 0;
}
