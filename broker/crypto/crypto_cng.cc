// The CNG backend of crypto.h (Windows): bcrypt.dll for hashing, HMAC and
// random bytes, crypt32.dll for base64. HKDF is built from HMAC as RFC 5869
// section 2 writes it (CNG's own BCRYPT_HKDF_ALGORITHM needs Windows 10 1709
// and is missing from Wine 8), so the Linux and Windows brokers derive the
// same session keys by construction; tests/crypto checks both against the RFC.
#include <windows.h>
// windows.h first: bcrypt.h and wincrypt.h use its types.
#include <bcrypt.h>
#include <wincrypt.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "broker/crypto/crypto.h"
#include "common/check.h"

namespace dsb::crypto {
namespace {

// An algorithm provider opened once per process and kept for its life
// (opening one is costly; a handle is safe to share between threads).
class Provider {
 public:
  explicit Provider(ULONG flags) {
    const NTSTATUS rc = BCryptOpenAlgorithmProvider(&handle_, BCRYPT_SHA256_ALGORITHM, nullptr, flags);
    DSB_CHECK(BCRYPT_SUCCESS(rc), "BCryptOpenAlgorithmProvider(SHA256, flags 0x%lx) failed: 0x%08lx",
              static_cast<unsigned long>(flags), static_cast<unsigned long>(rc));
  }
  Provider(const Provider&) = delete;
  Provider& operator=(const Provider&) = delete;
  BCRYPT_ALG_HANDLE get() const { return handle_; }

 private:
  BCRYPT_ALG_HANDLE handle_ = nullptr;
};

const Provider& Sha256Provider() {
  static const Provider provider(0);
  return provider;
}

const Provider& HmacProvider() {
  static const Provider provider(BCRYPT_ALG_HANDLE_HMAC_FLAG);
  return provider;
}

ULONG SizeAsUlong(std::size_t n, const char* what) {
  DSB_CHECK(n <= std::numeric_limits<ULONG>::max(), "%s of %zu bytes", what, n);
  return static_cast<ULONG>(n);
}

// One hash object over `data` (a plain hash, or an HMAC when `provider` was
// opened with BCRYPT_ALG_HANDLE_HMAC_FLAG and `key` is its secret).
Sha256Digest Digest(const Provider& provider, ByteSpan key, ByteSpan data, const char* what) {
  BCRYPT_HASH_HANDLE hash = nullptr;
  // CNG keeps no pointer to the secret past BCryptCreateHash; it copies it.
  NTSTATUS rc = BCryptCreateHash(provider.get(), &hash, nullptr, 0,
                                 const_cast<PUCHAR>(key.data()), SizeAsUlong(key.size(), what), 0);
  DSB_CHECK(BCRYPT_SUCCESS(rc), "%s: BCryptCreateHash failed: 0x%08lx", what,
            static_cast<unsigned long>(rc));
  if (!data.empty()) {
    rc = BCryptHashData(hash, const_cast<PUCHAR>(data.data()), SizeAsUlong(data.size(), what), 0);
    DSB_CHECK(BCRYPT_SUCCESS(rc), "%s: BCryptHashData failed: 0x%08lx", what,
              static_cast<unsigned long>(rc));
  }
  Sha256Digest out{};
  rc = BCryptFinishHash(hash, out.data(), static_cast<ULONG>(out.size()), 0);
  DSB_CHECK(BCRYPT_SUCCESS(rc), "%s: BCryptFinishHash failed: 0x%08lx", what,
            static_cast<unsigned long>(rc));
  BCryptDestroyHash(hash);
  return out;
}

}  // namespace

Sha256Digest Sha256(ByteSpan data) { return Digest(Sha256Provider(), {}, data, "SHA-256"); }

Sha256Digest HmacSha256(ByteSpan key, ByteSpan data) {
  DSB_CHECK(key.size() <= static_cast<std::size_t>(std::numeric_limits<int>::max()),
            "HMAC key of %zu bytes", key.size());
  // HMAC pads a key with zeros to the block size, so the empty key and a key
  // of one zero byte are the same key; CNG may refuse a secret of 0 bytes.
  static constexpr std::uint8_t kZero[1] = {0};
  const ByteSpan secret = key.empty() ? ByteSpan(kZero) : key;
  return Digest(HmacProvider(), secret, data, "HMAC-SHA256");
}

// RFC 5869 section 2.2 and 2.3, word for word:
//   PRK = HMAC(salt, IKM)                 (salt empty: HashLen zeros)
//   T(0) = "", T(i) = HMAC(PRK, T(i-1) | info | i), OKM = first L bytes of T(1) | T(2) | ...
void HkdfSha256(ByteSpan ikm, ByteSpan salt, ByteSpan info, std::span<std::uint8_t> out) {
  DSB_CHECK(out.size() <= 255 * kSha256Size, "HKDF-SHA256 output of %zu bytes", out.size());
  static constexpr std::array<std::uint8_t, kSha256Size> kZeroSalt{};
  Sha256Digest prk = HmacSha256(salt.empty() ? ByteSpan(kZeroSalt) : salt, ikm);
  std::vector<std::uint8_t> block;  // T(i-1) | info | i
  // Its whole size up front: a growing vector would leave copies of T(i-1)
  // (key material) in freed memory that Cleanse never sees.
  block.reserve(kSha256Size + info.size() + 1);
  Sha256Digest t{};
  std::size_t done = 0;
  for (unsigned i = 1; done < out.size(); ++i) {
    block.clear();
    if (i > 1) block.insert(block.end(), t.begin(), t.end());
    block.insert(block.end(), info.begin(), info.end());
    block.push_back(static_cast<std::uint8_t>(i));
    t = HmacSha256(prk, ByteSpan(block.data(), block.size()));
    const std::size_t n = std::min(t.size(), out.size() - done);
    std::copy_n(t.begin(), n, out.begin() + static_cast<std::ptrdiff_t>(done));
    done += n;
  }
  Cleanse(prk);
  Cleanse(t);
  Cleanse(std::span<std::uint8_t>(block.data(), block.size()));
}

bool RandomBytes(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const std::size_t chunk =
        std::min(out.size() - done, static_cast<std::size_t>(std::numeric_limits<ULONG>::max()));
    const NTSTATUS rc = BCryptGenRandom(nullptr, out.data() + done, static_cast<ULONG>(chunk),
                                        BCRYPT_USE_SYSTEM_PREFERRED_RNG);
    if (!BCRYPT_SUCCESS(rc)) return false;
    done += chunk;
  }
  return true;
}

bool ConstantTimeEqual(ByteSpan a, ByteSpan b) {
  if (a.size() != b.size()) return false;
  // Every byte is read whatever the others hold; volatile keeps the compiler
  // from turning the loop into an early-exit memcmp.
  volatile std::uint8_t diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = static_cast<std::uint8_t>(diff | (a[i] ^ b[i]));
  return diff == 0;
}

void Cleanse(std::span<std::uint8_t> bytes) {
  if (!bytes.empty()) SecureZeroMemory(bytes.data(), bytes.size());
}

std::string Base64(ByteSpan data) {
  if (data.empty()) return {};  // CryptBinaryToStringA refuses 0 bytes
  const DWORD flags = CRYPT_STRING_BASE64 | CRYPT_STRING_NOCRLF;
  const DWORD in = SizeAsUlong(data.size(), "base64");
  DWORD size = 0;  // first call: the size needed, the terminating NUL included
  DSB_CHECK(CryptBinaryToStringA(data.data(), in, flags, nullptr, &size) && size > 0,
            "CryptBinaryToStringA(size) failed: %lu", static_cast<unsigned long>(GetLastError()));
  std::string encoded(size, '\0');
  DSB_CHECK(CryptBinaryToStringA(data.data(), in, flags, encoded.data(), &size),
            "CryptBinaryToStringA failed: %lu", static_cast<unsigned long>(GetLastError()));
  encoded.resize(size);  // second call: the length without the NUL
  return encoded;
}

}  // namespace dsb::crypto
