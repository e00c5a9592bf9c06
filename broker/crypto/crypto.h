// Crypto: the few primitives dsb needs, behind one seam with two backends.
//
//   crypto_openssl.cc  Linux (and any POSIX build): OpenSSL 3 (libcrypto).
//   crypto_cng.cc      Windows: CNG (bcrypt.dll), plus crypt32 for base64.
//
// CMake picks one (broker/crypto/CMakeLists.txt, `if(WIN32)`); both are
// built from this contract and must agree byte for byte: a Linux broker and
// a Windows broker share one cluster key and authenticate each other through
// HmacSha256 and HkdfSha256 (broker/wire/auth.cc), and compare cluster file
// digests (Sha256). tests/crypto/crypto_test.cc checks both against the
// published vectors (FIPS 180-2 / NIST SHA-256, RFC 4231 HMAC-SHA256,
// RFC 5869 HKDF-SHA256, RFC 4648 base64) on Linux and under Wine.
//
// Failure policy: hashing, HMAC and HKDF of buffers in memory cannot fail
// short of a broken library or exhausted memory, so a failure there aborts
// (DSB_CHECK) naming the call; no protocol step is safe with a wrong digest.
// Only RandomBytes reports failure as a value: one caller (the instance id)
// has a fallback, the other (handshake nonces) aborts itself.
//
// Thread rule: every function is thread-safe and keeps no state visible to
// the caller (the CNG backend caches algorithm handles, made once, thread-safe).
#ifndef DSB_BROKER_CRYPTO_CRYPTO_H_
#define DSB_BROKER_CRYPTO_CRYPTO_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace dsb::crypto {

inline constexpr std::size_t kSha256Size = 32;
using Sha256Digest = std::array<std::uint8_t, kSha256Size>;
using ByteSpan = std::span<const std::uint8_t>;

// The bytes of `text`, for the functions below.
inline ByteSpan AsBytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// SHA-256 (FIPS 180-4) of `data`. Aborts only if the library fails.
Sha256Digest Sha256(ByteSpan data);

// HMAC-SHA256 (RFC 2104) of `data` under `key` (any length; a key longer
// than 64 bytes is hashed first, as the RFC says). Aborts only if the
// library fails or `key` is longer than 2^31 - 1 bytes.
Sha256Digest HmacSha256(ByteSpan key, ByteSpan data);

// HKDF-SHA256 (RFC 5869): extract with `salt` (empty: 32 zero bytes, as the
// RFC says), expand with `info` into all of `out`.
// REQUIRES: out.size() <= 255 * 32 (the RFC's limit). Aborts otherwise.
void HkdfSha256(ByteSpan ikm, ByteSpan salt, ByteSpan info, std::span<std::uint8_t> out);

// Fills `out` from the system's CSPRNG (OpenSSL's RAND_bytes; BCryptGenRandom
// with the system-preferred RNG). Returns false if it could not: `out` then
// holds no usable randomness and the caller must not treat it as secret.
[[nodiscard]] bool RandomBytes(std::span<std::uint8_t> out);

// True when `a` and `b` have the same length and the same bytes. The time
// taken depends on the length only, never on where they differ (for MACs).
bool ConstantTimeEqual(ByteSpan a, ByteSpan b);

// Overwrites `bytes` with zeros in a way the compiler may not optimise away
// (secrets: keys, derived keys, key file contents).
void Cleanse(std::span<std::uint8_t> bytes);

// Standard base64 (RFC 4648 section 4: '+' '/', '=' padding, no line
// breaks) of `data`; "" for no bytes.
std::string Base64(ByteSpan data);

}  // namespace dsb::crypto

#endif  // DSB_BROKER_CRYPTO_CRYPTO_H_
