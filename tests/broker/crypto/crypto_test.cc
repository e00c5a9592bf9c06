// Known-answer tests of the crypto seam (broker/crypto/crypto.h), the same
// file on Linux (OpenSSL) and under Wine (CNG): a Linux and a Windows broker
// share one cluster key, so both backends must give these exact bytes.
// Vectors: FIPS 180-2 appendix B (SHA-256), RFC 4231 section 4 (HMAC-SHA256),
// RFC 5869 appendix A.1-A.3 (HKDF-SHA256), RFC 4648 section 10 (base64).
#include "broker/crypto/crypto.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/hex.h"

namespace dsb::crypto {
namespace {

std::vector<std::uint8_t> Repeat(std::uint8_t byte, std::size_t n) {
  return std::vector<std::uint8_t>(n, byte);
}

std::vector<std::uint8_t> Range(unsigned from, unsigned to) {  // [from, to)
  std::vector<std::uint8_t> out;
  for (unsigned b = from; b < to; ++b) out.push_back(static_cast<std::uint8_t>(b));
  return out;
}

std::string Hex(ByteSpan bytes) { return HexEncode(bytes); }

TEST(Crypto, Sha256MatchesFips180Vectors) {
  EXPECT_EQ(Hex(Sha256(AsBytes(""))),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex(Sha256(AsBytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(Sha256(AsBytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(Hex(Sha256(AsBytes(million))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

struct HmacCase {
  const char* name;
  std::vector<std::uint8_t> key;
  std::vector<std::uint8_t> data;
  const char* mac_hex;  // RFC 4231's HMAC-SHA-256 line (case 5: truncated to 128 bits)
};

std::vector<std::uint8_t> Text(std::string_view s) {
  const ByteSpan b = AsBytes(s);
  return {b.begin(), b.end()};
}

TEST(Crypto, HmacSha256MatchesRfc4231Vectors) {
  const std::vector<HmacCase> cases = {
      {"case 1", Repeat(0x0b, 20), Text("Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"case 2 (key shorter than the output)", Text("Jefe"), Text("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {"case 3", Repeat(0xaa, 20), Repeat(0xdd, 50),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {"case 4", Range(0x01, 0x1a), Repeat(0xcd, 50),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {"case 5 (truncated)", Repeat(0x0c, 20), Text("Test With Truncation"),
       "a3b6167473100ee06e0c796c2955552b"},
      {"case 6 (key larger than a block)", Repeat(0xaa, 131),
       Text("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {"case 7 (key and data larger than a block)", Repeat(0xaa, 131),
       Text("This is a test using a larger than block-size key and a larger than block-size "
            "data. The key needs to be hashed before being used by the HMAC algorithm."),
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (const HmacCase& c : cases) {
    const std::string mac = Hex(HmacSha256(c.key, c.data));
    const std::string want = c.mac_hex;
    EXPECT_EQ(mac.substr(0, want.size()), want) << c.name;
  }
}

TEST(Crypto, HmacWithAnEmptyKeyIsTheZeroPaddedKey) {
  // HMAC pads the key with zeros, so "" and "\0" are one key (the CNG
  // backend relies on this; OpenSSL takes "" as it is).
  const std::vector<std::uint8_t> zero = {0};
  EXPECT_EQ(Hex(HmacSha256({}, AsBytes("x"))), Hex(HmacSha256(zero, AsBytes("x"))));
  EXPECT_EQ(Hex(HmacSha256({}, AsBytes("x"))),
            "4cbc96099a6467ce002461f10549b4898265ebe6188b45efacc44293516e62c4");
}

struct HkdfCase {
  const char* name;
  std::vector<std::uint8_t> ikm, salt, info;
  std::size_t length;
  const char* okm_hex;
};

TEST(Crypto, HkdfSha256MatchesRfc5869Vectors) {
  const std::vector<HkdfCase> cases = {
      {"A.1 basic", Repeat(0x0b, 22), Range(0x00, 0x0d), Range(0xf0, 0xfa), 42,
       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
      {"A.2 longer inputs and outputs", Range(0x00, 0x50), Range(0x60, 0xb0), Range(0xb0, 0x100),
       82,
       "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e"
       "590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
      {"A.3 no salt, no info", Repeat(0x0b, 22), {}, {}, 42,
       "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
  };
  for (const HkdfCase& c : cases) {
    std::vector<std::uint8_t> okm(c.length);
    HkdfSha256(c.ikm, c.salt, c.info, okm);
    EXPECT_EQ(Hex(okm), c.okm_hex) << c.name;
  }
}

TEST(Crypto, HkdfOfTheWireHandshakeSizesIsAPrefixOfTheLongerOutput) {
  // auth.cc derives 32 bytes (hello key) and 64 (two session keys): HKDF's
  // output for a length is the prefix of its output for a longer one.
  std::vector<std::uint8_t> short_okm(32), long_okm(64);
  const auto ikm = Repeat(0x42, 32);
  HkdfSha256(ikm, {}, AsBytes("dsb-wire v1 hello mac"), short_okm);
  HkdfSha256(ikm, {}, AsBytes("dsb-wire v1 hello mac"), long_okm);
  EXPECT_EQ(Hex(short_okm), Hex(ByteSpan(long_okm).first(32)));
}

TEST(Crypto, Base64MatchesRfc4648Vectors) {
  EXPECT_EQ(Base64(AsBytes("")), "");
  EXPECT_EQ(Base64(AsBytes("f")), "Zg==");
  EXPECT_EQ(Base64(AsBytes("fo")), "Zm8=");
  EXPECT_EQ(Base64(AsBytes("foo")), "Zm9v");
  EXPECT_EQ(Base64(AsBytes("foob")), "Zm9vYg==");
  EXPECT_EQ(Base64(AsBytes("fooba")), "Zm9vYmE=");
  EXPECT_EQ(Base64(AsBytes("foobar")), "Zm9vYmFy");
  // A SHA-256 digest (the status page's CSP hashes): 44 characters, no line break.
  EXPECT_EQ(Base64(Sha256(AsBytes(""))), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  // Longer than one PEM line (64 characters): still one line.
  const std::string b64 = Base64(Repeat(0xff, 100));
  EXPECT_EQ(b64.find_first_of("\r\n"), std::string::npos);
  EXPECT_EQ(b64.size(), 4u * ((100 + 2) / 3));
}

TEST(Crypto, ConstantTimeEqualComparesLengthAndEveryByte) {
  const auto a = Range(0, 32);
  auto b = a;
  EXPECT_TRUE(ConstantTimeEqual(a, b));
  EXPECT_TRUE(ConstantTimeEqual({}, {}));
  b.back() ^= 1;
  EXPECT_FALSE(ConstantTimeEqual(a, b));
  b = a;
  b.front() ^= 0x80;
  EXPECT_FALSE(ConstantTimeEqual(a, b));
  EXPECT_FALSE(ConstantTimeEqual(a, ByteSpan(a).first(31)));
}

TEST(Crypto, RandomBytesFillsAndDiffersBetweenDraws) {
  std::vector<std::uint8_t> x(32), y(32);
  ASSERT_TRUE(RandomBytes(x));
  ASSERT_TRUE(RandomBytes(y));
  // Two 256-bit draws agree with probability 2^-256; all-zero likewise.
  EXPECT_NE(Hex(x), Hex(y));
  EXPECT_NE(Hex(x), std::string(64, '0'));
  EXPECT_TRUE(RandomBytes({}));  // nothing asked, nothing to fail
}

TEST(Crypto, CleanseZeroesEveryByte) {
  auto secret = Repeat(0x5a, 40);
  Cleanse(secret);
  EXPECT_EQ(secret, Repeat(0, 40));
}

}  // namespace
}  // namespace dsb::crypto
