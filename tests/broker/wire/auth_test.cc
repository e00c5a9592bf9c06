#include "broker/wire/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#ifndef _WIN32
#include <unistd.h>
#endif

#include <filesystem>
#include <fstream>
#include <string>

#include "common/hex.h"
#ifdef _WIN32
#include "broker/secure_fs.h"
#endif
#include "tests/broker/wire/test_messages.h"
#include "tests/support/scratch_dir.h"

namespace dsb::wire {
namespace {

using ::testing::HasSubstr;
using testing::CredentialsOf;
using testing::SampleGrant;
using testing::SampleRenew;

// Passes frames between two handshakes until neither has anything to say.
// Returns the first failure of either side (or OK).
struct PumpResult {
  Status client;
  Status server;
};
PumpResult Pump(Handshake& client, Handshake& server) {
  PumpResult result;
  client.Start();
  for (int round = 0; round < 10; ++round) {
    bool moved = false;
    for (const Bytes& f : client.TakeOutgoing()) {
      moved = true;
      if (result.server.ok() && !server.failed()) result.server = server.OnFrame(f);
    }
    for (const Bytes& f : server.TakeOutgoing()) {
      moved = true;
      if (result.client.ok() && !client.failed()) result.client = client.OnFrame(f);
    }
    if (!moved) break;
  }
  return result;
}

Nonce NonceOf(std::uint8_t fill) {
  Nonce n;
  n.fill(fill);
  return n;
}

// A finished pair of sessions (client side, server side).
struct Pair {
  Session client;
  Session server;
};
Pair Connected(std::uint8_t client_nonce = 1, std::uint8_t server_nonce = 2) {
  Handshake c(Handshake::Role::kClient, CredentialsOf("ws-a", 7), NonceOf(client_nonce));
  Handshake s(Handshake::Role::kServer, CredentialsOf("ws-b", 7), NonceOf(server_nonce));
  PumpResult r = Pump(c, s);
  EXPECT_TRUE(r.client.ok()) << r.client.message();
  EXPECT_TRUE(r.server.ok()) << r.server.message();
  EXPECT_TRUE(c.done() && s.done());
  return {c.TakeSession(), s.TakeSession()};
}

Bytes Seal(Session& s, const Message& m) {
  Result<Bytes> f = s.Seal(m);
  EXPECT_TRUE(f.ok()) << f.status().message();
  return f.ok() ? f.value() : Bytes{};
}

TEST(WireAuth, HmacMatchesRfc4231TestCase2) {
  const std::string key = "Jefe";
  const std::string data = "what do ya want for nothing?";
  const Proof mac = HmacSha256({reinterpret_cast<const std::uint8_t*>(key.data()), key.size()},
                               {reinterpret_cast<const std::uint8_t*>(data.data()), data.size()});
  EXPECT_EQ(HexEncode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(WireAuth, HandshakeAuthenticatesBothAndCarriesMessagesBothWays) {
  Handshake c = Handshake::Client(CredentialsOf("ws-a", 7));
  Handshake s = Handshake::Server(CredentialsOf("ws-b", 7));
  PumpResult r = Pump(c, s);
  ASSERT_TRUE(r.client.ok()) << r.client.message();
  ASSERT_TRUE(r.server.ok()) << r.server.message();
  ASSERT_TRUE(c.done());
  ASSERT_TRUE(s.done());
  EXPECT_EQ(c.peer().broker_id, "ws-b");
  EXPECT_EQ(s.peer().broker_id, "ws-a");
  Session cs = c.TakeSession();
  Session ss = s.TakeSession();
  for (int i = 0; i < 3; ++i) {
    Result<Message> got = ss.Open(Seal(cs, SampleRenew()));
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(std::get<lease::RenewRequest>(*got), SampleRenew());
    Result<Message> back = cs.Open(Seal(ss, SampleGrant()));
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(std::get<lease::Grant>(*back), SampleGrant());
  }
  EXPECT_EQ(cs.send_sequence(), 5u);  // 0 hello, 1 finish, 2..4 data
  EXPECT_EQ(ss.receive_sequence(), 5u);
}

TEST(WireAuth, ServerRefusesClientWithWrongKeyAndSendsNothing) {
  Handshake c = Handshake::Client(CredentialsOf("ws-a", 1));
  Handshake s = Handshake::Server(CredentialsOf("ws-b", 2));
  c.Start();
  std::vector<Bytes> hello = c.TakeOutgoing();
  ASSERT_EQ(hello.size(), 1u);
  Status st = s.OnFrame(hello[0]);
  EXPECT_EQ(st.code(), Errc::kAuthFailed);
  EXPECT_THAT(st.message(), HasSubstr("does not hold this cluster key"));
  EXPECT_TRUE(s.TakeOutgoing().empty());
  EXPECT_TRUE(s.failed());
}

TEST(WireAuth, ClientRefusesServerWithWrongKey) {
  // A server holding key 2 answers a (key 2) hello; our key-1 client gets that answer.
  Handshake other_client = Handshake::Client(CredentialsOf("ws-x", 2));
  Handshake s = Handshake::Server(CredentialsOf("ws-b", 2));
  other_client.Start();
  ASSERT_TRUE(s.OnFrame(other_client.TakeOutgoing()[0]).ok());
  const Bytes server_hello = s.TakeOutgoing()[0];

  Handshake c = Handshake::Client(CredentialsOf("ws-a", 1));
  c.Start();
  Status st = c.OnFrame(server_hello);
  EXPECT_EQ(st.code(), Errc::kAuthFailed);
  EXPECT_TRUE(c.TakeOutgoing().size() == 1);  // only its own hello: no finish, no proof
}

TEST(WireAuth, ClientRefusesReplayedServerHello) {
  // A recorded ServerHello (valid MAC, valid proof for another client nonce).
  Handshake c1(Handshake::Role::kClient, CredentialsOf("ws-a", 7), NonceOf(1));
  Handshake s1(Handshake::Role::kServer, CredentialsOf("ws-b", 7), NonceOf(2));
  c1.Start();
  ASSERT_TRUE(s1.OnFrame(c1.TakeOutgoing()[0]).ok());
  const Bytes recorded = s1.TakeOutgoing()[0];

  Handshake c2(Handshake::Role::kClient, CredentialsOf("ws-a", 7), NonceOf(3));
  c2.Start();
  c2.TakeOutgoing();
  Status st = c2.OnFrame(recorded);
  EXPECT_EQ(st.code(), Errc::kAuthFailed);
  EXPECT_THAT(st.message(), HasSubstr("server's proof does not verify"));
  EXPECT_TRUE(c2.TakeOutgoing().empty());
}

TEST(WireAuth, ServerRefusesReplayedClientHandshake) {
  // Record a whole client side of a good handshake...
  Handshake c1(Handshake::Role::kClient, CredentialsOf("ws-a", 7), NonceOf(1));
  Handshake s1(Handshake::Role::kServer, CredentialsOf("ws-b", 7), NonceOf(2));
  c1.Start();
  const Bytes hello = c1.TakeOutgoing()[0];
  ASSERT_TRUE(s1.OnFrame(hello).ok());
  ASSERT_TRUE(c1.OnFrame(s1.TakeOutgoing()[0]).ok());
  const Bytes finish = c1.TakeOutgoing()[0];
  ASSERT_TRUE(s1.OnFrame(finish).ok());
  ASSERT_TRUE(s1.done());

  // ...and replay it to a server that picks a fresh nonce.
  Handshake s2(Handshake::Role::kServer, CredentialsOf("ws-b", 7), NonceOf(9));
  ASSERT_TRUE(s2.OnFrame(hello).ok());  // a hello proves nothing yet
  s2.TakeOutgoing();
  Status st = s2.OnFrame(finish);
  EXPECT_EQ(st.code(), Errc::kAuthFailed);
  EXPECT_THAT(st.message(), HasSubstr("client's proof does not verify"));
  EXPECT_FALSE(s2.done());
  EXPECT_TRUE(s2.TakeOutgoing().empty());
}

TEST(WireAuth, ClusterHashMismatchIsRefusedNamingBothHashes) {
  Handshake c = Handshake::Client(CredentialsOf("ws-a", 7, "aaaa1111"));
  Handshake s = Handshake::Server(CredentialsOf("ws-b", 7, "bbbb2222"));
  PumpResult r = Pump(c, s);
  for (const Status* st : {&r.client, &r.server}) {
    EXPECT_EQ(st->code(), Errc::kConflict) << st->message();
    EXPECT_THAT(st->message(), HasSubstr("aaaa1111"));
    EXPECT_THAT(st->message(), HasSubstr("bbbb2222"));
  }
  EXPECT_FALSE(c.done());
  EXPECT_FALSE(s.done());
}

TEST(WireAuth, ClusterHashMismatchSendsReasonsOnlyAfterProofs) {
  Handshake c2(Handshake::Role::kClient, CredentialsOf("ws-a", 7, "aaaa1111"), NonceOf(1));
  Handshake s2(Handshake::Role::kServer, CredentialsOf("ws-b", 7, "bbbb2222"), NonceOf(2));
  c2.Start();
  ASSERT_TRUE(s2.OnFrame(c2.TakeOutgoing()[0]).ok());
  EXPECT_EQ(c2.OnFrame(s2.TakeOutgoing()[0]).code(), Errc::kConflict);
  // The client still proves itself, then says why it leaves.
  std::vector<Bytes> from_client = c2.TakeOutgoing();
  ASSERT_EQ(from_client.size(), 2u);
  EXPECT_EQ(from_client[0][6], static_cast<std::uint8_t>(MessageType::kClientFinish));
  EXPECT_EQ(from_client[1][6], static_cast<std::uint8_t>(MessageType::kErrorReply));
  // The server checks the proof first (it verifies), then refuses with its own reply.
  Status st = s2.OnFrame(from_client[0]);
  EXPECT_EQ(st.code(), Errc::kConflict);
  std::vector<Bytes> from_server = s2.TakeOutgoing();
  ASSERT_EQ(from_server.size(), 1u);
  EXPECT_EQ(from_server[0][6], static_cast<std::uint8_t>(MessageType::kErrorReply));
}

TEST(WireAuth, ReplayedFrameIsRefusedAndTheSessionStaysClosed) {
  Pair p = Connected();
  const Bytes first = Seal(p.client, SampleRenew());
  const Bytes second = Seal(p.client, SampleRenew());
  ASSERT_TRUE(p.server.Open(first).ok());
  Result<Message> replay = p.server.Open(first);
  EXPECT_EQ(replay.status().code(), Errc::kAuthFailed);
  EXPECT_THAT(replay.status().message(), HasSubstr("sequence number 2, expected 3"));
  EXPECT_TRUE(p.server.failed());
  // Even the genuine next frame is refused now: the connection must close.
  EXPECT_EQ(p.server.Open(second).status().code(), Errc::kAuthFailed);
  EXPECT_EQ(p.server.Seal(SampleGrant()).status().code(), Errc::kAuthFailed);
}

TEST(WireAuth, ReorderedFrameIsRefused) {
  Pair p = Connected();
  const Bytes a = Seal(p.client, SampleRenew());
  const Bytes b = Seal(p.client, SampleRenew());
  Result<Message> r = p.server.Open(b);
  EXPECT_EQ(r.status().code(), Errc::kAuthFailed);
  EXPECT_THAT(r.status().message(), HasSubstr("replayed, reordered or dropped"));
  EXPECT_FALSE(p.server.Open(a).ok());
}

struct Tamper {
  const char* name;
  void (*apply)(Bytes&);
  Errc expected;
};

TEST(WireAuth, ForgedOrTruncatedFramesAreRefused) {
  const std::vector<Tamper> cases = {
      {"flipped MAC bit", [](Bytes& f) { f.back() ^= 1; }, Errc::kAuthFailed},
      {"flipped payload bit", [](Bytes& f) { f[kHeaderSize + 3] ^= 0x10; }, Errc::kAuthFailed},
      {"sequence number rewritten", [](Bytes& f) { f[12] = 3; }, Errc::kAuthFailed},
      {"type rewritten", [](Bytes& f) { f[6] = static_cast<std::uint8_t>(MessageType::kGrant); },
       Errc::kAuthFailed},
      {"last byte cut", [](Bytes& f) { f.pop_back(); }, Errc::kAuthFailed},
      {"payload cut, length fixed up",
       [](Bytes& f) {
         f.erase(f.begin() + kHeaderSize + 2);
         f[20] = static_cast<std::uint8_t>(f[20] - 1);
       },
       Errc::kAuthFailed},
      {"byte appended", [](Bytes& f) { f.push_back(0); }, Errc::kAuthFailed},
      {"MAC zeroed", [](Bytes& f) { std::fill(f.end() - kMacSize, f.end(), 0); },
       Errc::kAuthFailed},
      {"bad magic", [](Bytes& f) { f[0] = 'X'; }, Errc::kProtocol},
  };
  for (const Tamper& c : cases) {
    Pair p = Connected();
    Bytes f = Seal(p.client, SampleRenew());
    c.apply(f);
    Result<Message> r = p.server.Open(f);
    EXPECT_EQ(r.status().code(), c.expected) << c.name << ": " << r.status().message();
    EXPECT_TRUE(p.server.failed()) << c.name;
  }
}

TEST(WireAuth, FramesAreBoundToTheirSessionAndDirection) {
  Pair p = Connected(1, 2);
  Pair q = Connected(3, 4);  // same key, other nonces
  const Bytes f = Seal(p.client, SampleRenew());
  EXPECT_EQ(q.server.Open(f).status().code(), Errc::kAuthFailed) << "cross-session replay";
  Pair r = Connected(1, 2);
  const Bytes g = Seal(r.client, SampleRenew());
  // Reflected back to its sender: the directions have different keys.
  EXPECT_EQ(r.client.Open(g).status().code(), Errc::kAuthFailed) << "reflection";
}

TEST(WireAuth, PayloadCapIsEnforcedOnBothSides) {
  Credentials small = CredentialsOf("ws-a", 7);
  small.max_payload = kMinPayloadCap;
  Handshake c(Handshake::Role::kClient, small, NonceOf(1));
  Handshake s(Handshake::Role::kServer, CredentialsOf("ws-b", 7), NonceOf(2));
  PumpResult r = Pump(c, s);
  ASSERT_TRUE(r.client.ok() && r.server.ok());
  Session cs = c.TakeSession();
  Session ss = s.TakeSession();
  const AdminReply big{std::string(2000, 'x')};
  // Sending over our own cap is refused and changes nothing.
  Result<Bytes> refused = cs.Seal(AdminRequest{big.json});
  EXPECT_EQ(refused.status().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(cs.failed());
  EXPECT_TRUE(ss.Open(Seal(cs, SampleRenew())).ok());
  // Receiving over our cap is refused before the MAC is even computed.
  Result<Message> over = cs.Open(Seal(ss, big));
  EXPECT_EQ(over.status().code(), Errc::kProtocol);
  EXPECT_THAT(over.status().message(), HasSubstr("exceeds the limit of 1024"));
}

TEST(WireAuth, HandshakeRefusesOutOfOrderAndLateFrames) {
  Pair p = Connected();
  Handshake s(Handshake::Role::kServer, CredentialsOf("ws-b", 7), NonceOf(2));
  // A data frame where a hello belongs.
  Status st = s.OnFrame(Seal(p.client, SampleRenew()));
  EXPECT_EQ(st.code(), Errc::kProtocol);
  EXPECT_THAT(st.message(), HasSubstr("expected ClientHello, got RenewRequest"));
  // Garbage.
  Handshake s2 = Handshake::Server(CredentialsOf("ws-b", 7));
  EXPECT_EQ(s2.OnFrame(Bytes(100, 0x41)).code(), Errc::kProtocol);
}

TEST(WireAuth, NoncesAreFresh) {
  EXPECT_NE(RandomNonce(), RandomNonce());
}

TEST(WireAuth, ValidateCredentialsNamesTheBadField) {
  Credentials c = CredentialsOf("ws-a", 7);
  EXPECT_TRUE(ValidateCredentials(c).ok());
  c.max_payload = kMaxPayloadBytes + 1;
  EXPECT_THAT(ValidateCredentials(c).message(), HasSubstr("max_payload"));
  c = CredentialsOf("", 7);
  EXPECT_THAT(ValidateCredentials(c).message(), HasSubstr("broker_id"));
  c = CredentialsOf("ws-a", 7, "has space");
  EXPECT_THAT(ValidateCredentials(c).message(), HasSubstr("cluster_hash"));
  c.key = ClusterKey();
  EXPECT_EQ(ValidateCredentials(c).code(), Errc::kInvalidArgument);
}

// ---- Key files ----

// On Windows the key file is checked by owner and DACL (secure_fs_win.cc), not
// by mode: the file is written as the broker writes its own, WriteFileAtomically,
// where a mode without group/other bits means a protected DACL (the account,
// SYSTEM, Administrators) and another mode the folder's inherited DACL. The
// mode-message case is POSIX-only.
class KeyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(scratch_.ok());
    dir_ = scratch_.path();
  }
  std::filesystem::path Write(const std::string& name, const std::string& contents,
                              [[maybe_unused]] unsigned mode) {
    const std::filesystem::path p = dir_ / name;
#ifndef _WIN32
    std::ofstream(p, std::ios::binary) << contents;
    EXPECT_EQ(::chmod(p.c_str(), mode), 0);
#else
    const Status written = broker::WriteFileAtomically(p, contents, static_cast<mode_t>(mode));
    EXPECT_TRUE(written.ok()) << written.message();
#endif
    return p;
  }
  dsb::testing::ScratchDir scratch_{"dsb-wire-key"};
  std::filesystem::path dir_;
};

TEST_F(KeyFile, LoadsHexAsWrittenByOpensslRand) {
  const std::string hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
  Result<ClusterKey> k = ClusterKey::LoadFile(Write("k", hex + "\n", 0600));
  ASSERT_TRUE(k.ok()) << k.status().message();
  ASSERT_EQ(k->bytes().size(), 32u);
  EXPECT_EQ(k->bytes()[1], 0x11);
  EXPECT_EQ(k->bytes()[31], 0xff);
}

TEST_F(KeyFile, LoadsRawBytes) {
  std::string raw(40, '\0');
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>(0x80 + i);
  Result<ClusterKey> k = ClusterKey::LoadFile(Write("k", raw, 0400));
  ASSERT_TRUE(k.ok()) << k.status().message();
  EXPECT_EQ(k->bytes().size(), 40u);
}

#ifndef _WIN32  // POSIX modes (Windows: a DACL others may read, tests/host).
TEST_F(KeyFile, RefusesFileOthersCanRead) {
  const auto p = Write("k", std::string(64, 'a'), 0644);
  Result<ClusterKey> k = ClusterKey::LoadFile(p);
  EXPECT_EQ(k.status().code(), Errc::kConfig);
  EXPECT_THAT(k.status().message(), HasSubstr("mode 0644"));
  EXPECT_THAT(k.status().message(), HasSubstr("chmod 600 " + p.string()));
  EXPECT_EQ(ClusterKey::LoadFile(Write("g", std::string(64, 'a'), 0640)).status().code(),
            Errc::kConfig);
}
#endif

TEST_F(KeyFile, RefusesShortOrMalformedKeys) {
  struct Case {
    const char* contents;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"abcd\n", "hex cluster key has 2 bytes; at least 32"},
      {"abc", "hex key has an odd number of digits (3)"},
      {"too short, not hex", "cluster key has 18 bytes"},
      {"", "cluster key has 0 bytes"},
  };
  for (const Case& c : cases) {
    Result<ClusterKey> k = ClusterKey::LoadFile(Write("k", c.contents, 0600));
    EXPECT_EQ(k.status().code(), Errc::kConfig) << c.contents;
    EXPECT_THAT(k.status().message(), HasSubstr(c.expected)) << c.contents;
  }
  EXPECT_THAT(ClusterKey::LoadFile(dir_ / "missing").status().message(), HasSubstr("cannot open"));
  EXPECT_THAT(ClusterKey::LoadFile(Write("big", std::string(5000, 'a'), 0600)).status().message(),
              HasSubstr("larger than 4096"));
#ifndef _WIN32
  ASSERT_EQ(::chmod(dir_.c_str(), 0700), 0);
  EXPECT_THAT(ClusterKey::LoadFile(dir_).status().message(), HasSubstr("not a regular file"));
#else  // Windows opens no folder as a file (Access denied): refused at the open.
  const Status folder = ClusterKey::LoadFile(dir_).status();
  EXPECT_EQ(folder.code(), Errc::kConfig);
  EXPECT_THAT(folder.message(), HasSubstr("cannot open cluster key file " + dir_.string()));
#endif
}

}  // namespace
}  // namespace dsb::wire
