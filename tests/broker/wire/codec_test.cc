#include "broker/wire/codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/broker/wire/test_messages.h"

namespace dsb::wire {
namespace {

using ::testing::HasSubstr;
using testing::SampleGrant;
using testing::SampleRefusal;
using testing::SampleRenew;

// Builds payloads byte by byte for the rejection table.
class B {
 public:
  B& u8(std::uint8_t v) { return le(v, 1); }
  B& u16(std::uint64_t v) { return le(v, 2); }
  B& u32(std::uint64_t v) { return le(v, 4); }
  B& u64(std::uint64_t v) { return le(v, 8); }
  B& str16(std::string_view s) {
    u16(s.size());
    return raw(s);
  }
  B& str32(std::string_view s) {
    u32(s.size());
    return raw(s);
  }
  B& raw(std::string_view s) {
    for (char c : s) bytes.push_back(static_cast<std::uint8_t>(c));
    return *this;
  }
  B& zeros(std::size_t n) {
    bytes.insert(bytes.end(), n, 0);
    return *this;
  }
  Bytes bytes;

 private:
  B& le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return *this;
  }
};

// A RenewRequest payload with one target, each field overridable.
B Renew(std::string_view broker = "ws-a", std::uint64_t count = 1,
        std::string_view target = "exch01") {
  B b;
  // broker, epoch, instance, request id, generation, file hash, erased
  b.str16(broker).u64(1).u64(9).u64(2).u64(3).str16("abcd").u8(0).u16(count);
  for (std::uint64_t i = 0; i < count && i < 1; ++i) {
    b.str16(target).u32(1).u64(2).u32(3).u32(4).u32(5).u32(6);
  }
  return b;
}

B GrantWith(std::uint64_t term, std::uint8_t learning) {
  B b;
  // broker, epoch, instance, request id, term, learning, verdict, generation, reason, successor
  b.str16("ws-a").u64(1).u64(9).u64(2).u64(term).u8(learning).u8(1).u64(3).str16("").str16("");
  b.u16(1).str16("exch01").u32(3);
  return b;
}

Bytes Encode(const Message& m) {
  Result<Bytes> r = EncodePayload(m);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? r.value() : Bytes{};
}

template <typename T>
void ExpectRoundTrip(const T& original) {
  const Message m = original;
  const Bytes bytes = Encode(m);
  Result<Message> back = DecodeMessage(TypeOf(m), bytes);
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_TRUE(std::holds_alternative<T>(*back));
  EXPECT_EQ(std::get<T>(*back), original);
  EXPECT_EQ(Encode(*back), bytes) << "encoding is not canonical";
}

TEST(WireCodec, RoundTripsLeaseMessages) {
  ExpectRoundTrip(SampleRenew());
  ExpectRoundTrip(SampleGrant());
  lease::Grant learning = SampleGrant();
  learning.learning = true;
  learning.targets.clear();
  learning.term = lease::Duration(0);
  ExpectRoundTrip(learning);
  ExpectRoundTrip(SampleRefusal());
}

TEST(WireCodec, RoundTripsExtremeValues) {
  lease::RenewRequest r;
  r.broker_id = std::string(kMaxIdBytes, 'b');
  r.epoch = std::numeric_limits<std::uint64_t>::max();
  r.request_id = std::numeric_limits<std::uint64_t>::max();
  const std::uint32_t max32 = std::numeric_limits<std::uint32_t>::max();
  for (std::size_t i = 0; i < kMaxTargetsPerMessage; ++i) {
    r.targets.push_back({"t" + std::to_string(i), max32, r.epoch, max32, max32, max32});
  }
  ExpectRoundTrip(r);

  lease::Grant g = SampleGrant();
  g.broker_id = "station-\xc3\xa9t\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x94\x91";  // UTF-8 é, €, 🔑
  g.term = lease::Duration(std::numeric_limits<std::int64_t>::max());
  ExpectRoundTrip(g);
}

TEST(WireCodec, RoundTripsReconfigurationMessages) {
  lease::Grant g = SampleGrant();
  g.instance = 77;
  g.verdict = lease::Verdict::kSuperseded;
  g.generation = 4;
  g.reason = "superseded by generation 5";
  g.successor = "ws2@127.0.0.1:17402";
  ExpectRoundTrip(g);
  lease::RenewRequest r = SampleRenew();
  r.instance = 5;
  r.generation = 3;
  r.file_hash = "00ff";
  r.erased = true;
  r.targets[0].registered = 2;
  ExpectRoundTrip(r);
  ExpectRoundTrip(lease::Goodbye{"ws-a", 3, 9, {{"exch01", 1, 4, 2}, {"pg", 0, 0, 1}}});
  ExpectRoundTrip(CoordinatorHello{"ws2", 5, "abcd", "127.0.0.1:17402"});
  lease::AcceptanceRecord rec{"ws-a", 3, 9, 4, {"exch01", "pg"}, {1, 2}, {0, 5}};
  ExpectRoundTrip(HelloReply{"ws1", 4, "ef01", "ws1", "127.0.0.1:17401", true, true, false, {rec}});
  // A record whose lists differ in length is refused on the way out.
  rec.floors.pop_back();
  EXPECT_FALSE(EncodePayload(Message(HelloReply{"ws1", 4, "ef01", "ws1", "", true, true, false,
                                                {rec}}))
                   .ok());
}

TEST(WireCodec, RoundTripsAdminAndErrors) {
  ExpectRoundTrip(AdminRequest{R"({"cmd":"leases"})"});
  ExpectRoundTrip(AdminReply{R"({"targets":[{"name":"exch01","limit":32}]})"});
  ExpectRoundTrip(AdminReply{std::string(kMaxAdminJsonBytes, 'x')});
  ExpectRoundTrip(ErrorReply{Errc::kConflict, "cluster file differs"});
  ExpectRoundTrip(ErrorReply{Errc::kInternal, ""});
  // A code this build does not know passes through unchanged.
  ExpectRoundTrip(ErrorReply{static_cast<Errc>(1000), "from a newer broker"});
}

TEST(WireCodec, RoundTripsHandshakeMessages) {
  Nonce n{};
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<std::uint8_t>(i);
  const std::vector<HandshakeMessage> all = {
      ClientHello{"ws-a", "abc123", n}, ServerHello{"ws-b", "abc123", n, Proof{1, 2, 3}},
      ClientFinish{Proof{9}}, HandshakeDone{}};
  for (const HandshakeMessage& m : all) {
    Result<Bytes> bytes = EncodePayload(m);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message();
    Result<HandshakeMessage> back = DecodeHandshake(TypeOf(m), *bytes);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(*back, m) << TypeName(TypeOf(m));
  }
}

struct BadPayload {
  const char* name;
  MessageType type;
  Bytes payload;
  const char* expected;  // substring of the refusal
};

TEST(WireCodec, RefusesMalformedPayloads) {
  const std::vector<BadPayload> cases = {
      {"empty", MessageType::kRenewRequest, {}, "RenewRequest.broker_id: truncated"},
      {"trailing byte", MessageType::kRenewRequest, Renew().u8(0).bytes, "1 trailing bytes"},
      {"overlong id length", MessageType::kRenewRequest, B().u16(129).zeros(129).bytes,
       "length 129 exceeds the limit of 128"},
      {"id length past the end", MessageType::kRenewRequest, B().u16(10).raw("abc").bytes,
       "truncated: needs 10 bytes, 3 left"},
      {"empty id", MessageType::kRenewRequest, Renew("").bytes, "broker_id: must not be empty"},
      {"invalid UTF-8 id", MessageType::kRenewRequest, Renew("ws\xff").bytes, "not valid UTF-8"},
      {"overlong UTF-8", MessageType::kRenewRequest, Renew("\xc0\xaf").bytes, "not valid UTF-8"},
      {"UTF-8 surrogate", MessageType::kRenewRequest, Renew("\xed\xa0\x80").bytes,
       "not valid UTF-8"},
      {"UTF-8 cut short", MessageType::kRenewRequest, Renew("ab\xe2\x82").bytes,
       "not valid UTF-8"},
      {"code point above U+10FFFF", MessageType::kRenewRequest, Renew("\xf4\x90\x80\x80").bytes,
       "not valid UTF-8"},
      {"control character in id", MessageType::kRenewRequest, Renew("ws\x01").bytes,
       "control character at byte 2"},
      {"control character in target", MessageType::kRenewRequest, Renew("ws", 1, "a\nb").bytes,
       "targets[0].target: has a control character"},
      {"count over the limit", MessageType::kRenewRequest, Renew("ws", 513).bytes,
       "count 513 exceeds the limit of 512"},
      {"count past the end", MessageType::kRenewRequest, Renew("ws", 300).bytes,
       "count 300 does not fit"},
      {"duplicate target", MessageType::kRenewRequest,
       B().str16("ws").u64(1).u64(9).u64(2).u64(3).str16("abcd").u8(0).u16(2)
           .str16("t").u32(1).u64(2).u32(3).u32(4).u32(5).u32(6)
           .str16("t").u32(1).u64(2).u32(3).u32(4).u32(5).u32(6).bytes,
       "'t' appears twice"},
      {"bad boolean", MessageType::kGrant, GrantWith(1, 2).bytes, "boolean byte is 2"},
      {"bad verdict", MessageType::kGrant,
       B().str16("ws-a").u64(1).u64(9).u64(2).u64(1).u8(0).u8(9).bytes, "9 is not a verdict"},
      {"negative term", MessageType::kGrant, GrantWith(~0ull, 0).bytes, "Grant.term: is negative"},
      {"error code 0", MessageType::kErrorReply, B().u32(0).str16("x").bytes,
       "0 is not an error code"},
      {"error code over int", MessageType::kErrorReply, B().u32(0x80000000u).str16("x").bytes,
       "is not an error code"},
      {"error text too long", MessageType::kErrorReply,
       B().u32(5).str16(std::string(1025, 'x')).bytes, "exceeds the limit of 1024"},
      {"control character in error text", MessageType::kErrorReply,
       B().u32(5).str16("line\nbreak").bytes, "ErrorReply.message: has a control character"},
      {"admin JSON not UTF-8", MessageType::kAdminRequest, B().str32("{\"\xfe\"}").bytes,
       "AdminRequest.json: is not valid UTF-8"},
      {"admin JSON empty", MessageType::kAdminReply, B().str32("").bytes, "must not be empty"},
      {"admin JSON length over the cap", MessageType::kAdminRequest, B().u32(0xffffffff).bytes,
       "exceeds the limit"},
      {"handshake type as a message", MessageType::kClientHello, Renew().bytes,
       "is not an application message"},
      {"unknown type", static_cast<MessageType>(99), Renew().bytes, "(unknown)"},
  };
  for (const BadPayload& c : cases) {
    Result<Message> r = DecodeMessage(c.type, c.payload);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), Errc::kProtocol) << c.name;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expected)) << c.name;
  }
}

TEST(WireCodec, RefusesMalformedHandshakePayloads) {
  const std::vector<BadPayload> cases = {
      {"hash with a space", MessageType::kClientHello,
       B().str16("ws").str16("ab cd").zeros(kNonceSize).bytes, "non-printable byte at 2"},
      {"empty hash", MessageType::kClientHello, B().str16("ws").str16("").zeros(kNonceSize).bytes,
       "cluster_hash: must not be empty"},
      {"short nonce", MessageType::kClientHello, B().str16("ws").str16("h").zeros(31).bytes,
       "ClientHello.nonce: truncated"},
      {"long proof", MessageType::kClientFinish, B().zeros(33).bytes, "1 trailing bytes"},
      {"done with a body", MessageType::kHandshakeDone, B().u8(0).bytes, "trailing"},
      {"message type as handshake", MessageType::kGrant, GrantWith(1, 0).bytes,
       "is not a handshake message"},
  };
  for (const BadPayload& c : cases) {
    Result<HandshakeMessage> r = DecodeHandshake(c.type, c.payload);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), Errc::kProtocol) << c.name;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expected)) << c.name;
  }
}

TEST(WireCodec, RoundTripsTheRevokeNotice) {
  ExpectRoundTrip(lease::RevokeNotice{"ws-a", 7});
  ExpectRoundTrip(lease::RevokeNotice{std::string(kMaxIdBytes, 'w'), ~0ull});
  // Its layout: the broker id (u16 length, bytes), then the epoch (u64).
  EXPECT_EQ(Encode(lease::RevokeNotice{"ws", 5}), B().str16("ws").u64(5).bytes);
  EXPECT_STREQ(TypeName(MessageType::kRevokeNotice), "RevokeNotice");
}

TEST(WireCodec, RefusesABadRevokeNotice) {
  const std::vector<BadPayload> cases = {
      {"empty", MessageType::kRevokeNotice, {}, "RevokeNotice.broker_id: truncated"},
      {"no epoch", MessageType::kRevokeNotice, B().str16("ws").bytes, "RevokeNotice.epoch"},
      {"epoch cut short", MessageType::kRevokeNotice, B().str16("ws").u32(5).bytes,
       "RevokeNotice.epoch"},
      {"trailing byte", MessageType::kRevokeNotice, B().str16("ws").u64(5).u8(0).bytes,
       "1 trailing bytes"},
      {"empty id", MessageType::kRevokeNotice, B().str16("").u64(5).bytes,
       "broker_id: must not be empty"},
      {"control character in id", MessageType::kRevokeNotice, B().str16("w\x1b").u64(5).bytes,
       "control character"},
      {"overlong id", MessageType::kRevokeNotice, B().u16(129).zeros(129).u64(5).bytes,
       "length 129 exceeds the limit of 128"},
      {"garbage", MessageType::kRevokeNotice, B().raw("GET / HTTP/1.1\r\n").bytes, "RevokeNotice"},
  };
  for (const BadPayload& c : cases) {
    Result<Message> r = DecodeMessage(c.type, c.payload);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), Errc::kProtocol) << c.name;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expected)) << c.name;
  }
  const Bytes full = Encode(lease::RevokeNotice{"ws-a", 7});
  for (std::size_t n = 0; n < full.size(); ++n) {
    EXPECT_FALSE(DecodeMessage(MessageType::kRevokeNotice, ByteView(full).first(n)).ok())
        << "cut to " << n << " bytes";
  }
  // What an encoder would send that a decoder refuses is refused on the way out.
  EXPECT_FALSE(EncodePayload(Message(lease::RevokeNotice{"", 1})).ok());
}

TEST(WireCodec, RefusesEveryTruncationOfAValidPayload) {
  for (const Message& m : std::vector<Message>{SampleRenew(), SampleGrant(), SampleRefusal(),
                                               ErrorReply{Errc::kTimeout, "late"}}) {
    const Bytes full = Encode(m);
    for (std::size_t n = 0; n < full.size(); ++n) {
      Result<Message> r = DecodeMessage(TypeOf(m), ByteView(full).first(n));
      EXPECT_FALSE(r.ok()) << TypeName(TypeOf(m)) << " cut to " << n << " bytes";
    }
  }
}

TEST(WireCodec, EncodeRefusesWhatDecodeWould) {
  lease::RenewRequest bad_id = SampleRenew();
  bad_id.broker_id = "ws\xff";
  lease::RenewRequest too_many = SampleRenew();
  too_many.targets.clear();
  for (std::size_t i = 0; i <= kMaxTargetsPerMessage; ++i) too_many.targets.push_back({"t" + std::to_string(i)});
  lease::Grant dup = SampleGrant();
  dup.targets.push_back(dup.targets.front());
  lease::Grant negative = SampleGrant();
  negative.term = lease::Duration(-1);
  lease::RefusalReport no_refusal = SampleRefusal();
  no_refusal.refusals = 0;
  lease::RefusalReport bad_target = SampleRefusal();
  bad_target.target.clear();
  const std::vector<std::pair<Message, const char*>> cases = {
      {no_refusal, "RefusalReport.refusals: must be at least 1"},
      {bad_target, "RefusalReport.target"},
      {bad_id, "RenewRequest.broker_id: is not valid UTF-8"},
      {too_many, "513 targets exceeds the limit of 512"},
      {dup, "appears twice"},
      {negative, "Grant.term: is negative"},
      {AdminRequest{std::string(kMaxAdminJsonBytes + 1, 'x')}, "exceeds the limit"},
      {ErrorReply{Errc::kOk, "not an error"}, "must be a positive error code"},
  };
  for (const auto& [message, expected] : cases) {
    Result<Bytes> r = EncodePayload(message);
    ASSERT_FALSE(r.ok()) << expected;
    EXPECT_EQ(r.status().code(), Errc::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(expected));
  }
}

Bytes Frame(MessageType type, std::uint64_t seq, const Bytes& payload) {
  Bytes f;
  AppendHeader({type, 0, seq, static_cast<std::uint32_t>(payload.size())}, &f);
  f.insert(f.end(), payload.begin(), payload.end());
  f.insert(f.end(), kMacSize, 0xaa);
  return f;
}

TEST(WireCodec, HeaderRoundTripsAndStartsWithMagic) {
  const Bytes frame = Frame(MessageType::kGrant, 0x0102030405060708, Bytes(5, 1));
  EXPECT_EQ(std::string(frame.begin(), frame.begin() + 4), "DSBW");
  Result<FrameView> v = SplitFrame(frame, kMaxPayloadBytes);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(v->header, (FrameHeader{MessageType::kGrant, 0, 0x0102030405060708, 5}));
  EXPECT_EQ(v->payload.size(), 5u);
  EXPECT_EQ(v->authenticated.size(), kHeaderSize + 5);
  EXPECT_EQ(v->mac.size(), kMacSize);
}

TEST(WireCodec, RefusesBadHeaders) {
  const Bytes good = Frame(MessageType::kGrant, 1, Bytes(2000, 0));
  struct Case {
    const char* name;
    std::size_t offset;
    std::uint8_t value;
    std::size_t cap;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"bad magic", 0, 'X', kMaxPayloadBytes, "bad magic"},
      {"version 1", 4, 1, kMaxPayloadBytes, "protocol version 1, this build speaks 2"},
      {"unknown type", 6, 99, kMaxPayloadBytes, "unknown message type 99"},
      {"unknown flag", 8, 1, kMaxPayloadBytes, "unknown flags 1"},
      {"length over the configured cap", 0, 'D', 1024, "payload length 2000 exceeds the limit of 1024"},
      {"length over the hard cap", 23, 0x7f, kMaxPayloadBytes, "exceeds the limit of 65536"},
  };
  for (const Case& c : cases) {
    Bytes f = good;
    f[c.offset] = c.value;
    Result<FrameHeader> h = DecodeHeader(ByteView(f).first(kHeaderSize), c.cap);
    ASSERT_FALSE(h.ok()) << c.name;
    EXPECT_EQ(h.status().code(), Errc::kProtocol);
    EXPECT_THAT(h.status().message(), HasSubstr(c.expected)) << c.name;
  }
  EXPECT_FALSE(DecodeHeader(ByteView(good).first(kHeaderSize - 1), kMaxPayloadBytes).ok());
}

TEST(WireCodec, SplitFrameRefusesTruncatedAndTrailing) {
  const Bytes good = Frame(MessageType::kAdminRequest, 3, Bytes{1, 2, 3});
  ASSERT_TRUE(SplitFrame(good, kMaxPayloadBytes).ok());
  Bytes shorter(good.begin(), good.end() - 1);
  EXPECT_THAT(SplitFrame(shorter, kMaxPayloadBytes).status().message(), HasSubstr("truncated"));
  Bytes longer = good;
  longer.push_back(0);
  EXPECT_THAT(SplitFrame(longer, kMaxPayloadBytes).status().message(),
              HasSubstr("trailing bytes"));
  EXPECT_THAT(SplitFrame(ByteView(good).first(10), kMaxPayloadBytes).status().message(),
              HasSubstr("shorter than a header"));
}

// Random byte mutations of valid payloads: never a crash, and whatever still
// decodes re-encodes to exactly the mutated bytes (the encoding is canonical,
// so no two byte strings decode to the same message).
TEST(WireCodec, RandomMutationsDecodeCanonicallyOrFail) {
  const std::uint32_t seed = std::random_device{}();
  std::printf("WireCodec.RandomMutations seed=%u\n", seed);
  std::mt19937 rng(seed);
  const std::vector<Message> samples = {SampleRenew(), SampleGrant(), SampleRefusal(),
                                        AdminRequest{"{\"a\":1}"},
                                        ErrorReply{Errc::kConflict, "differs"}};
  int decoded = 0;
  int refused = 0;
  for (int i = 0; i < 20000; ++i) {
    const Message& m = samples[static_cast<std::size_t>(i) % samples.size()];
    Bytes bytes = Encode(m);
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 3) {
        case 0:
          bytes[rng() % bytes.size()] = static_cast<std::uint8_t>(rng());
          break;
        case 1:
          bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(rng() % (bytes.size() + 1)),
                       static_cast<std::uint8_t>(rng()));
          break;
        default:
          if (bytes.size() > 1) {
            bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(rng() % bytes.size()));
          }
      }
    }
    Result<Message> r = DecodeMessage(TypeOf(m), bytes);
    if (r.ok()) {
      ++decoded;
      ASSERT_EQ(Encode(*r), bytes) << "seed " << seed << " iteration " << i;
    } else {
      ++refused;
      ASSERT_EQ(r.status().code(), Errc::kProtocol) << "seed " << seed;
    }
  }
  std::printf("decoded %d, refused %d\n", decoded, refused);
  EXPECT_GT(refused, 0);
  EXPECT_GT(decoded, 0);  // mutations inside numbers still decode
}

TEST(WireCodec, Utf8Validator) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));  // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xf8\x88\x80\x80\x80"));
  EXPECT_TRUE(CheckId("id", "exch01/svc-digiscope").ok());
  EXPECT_FALSE(CheckId("id", std::string(kMaxIdBytes + 1, 'a')).ok());
}

}  // namespace
}  // namespace dsb::wire
