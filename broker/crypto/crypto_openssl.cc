// The OpenSSL backend of crypto.h (Linux). The calls are the ones
// broker/wire/auth.cc, broker/cluster_state.cc, broker/config/cluster_config.cc
// and broker/http/status_page_csp.cc made before the seam, moved here unchanged.
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <limits>

#include "broker/crypto/crypto.h"
#include "common/check.h"

namespace dsb::crypto {

Sha256Digest Sha256(ByteSpan data) {
  Sha256Digest out{};
  unsigned int len = 0;
  DSB_CHECK(EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) == 1 &&
                len == out.size(),
            "SHA-256 failed");
  return out;
}

Sha256Digest HmacSha256(ByteSpan key, ByteSpan data) {
  Sha256Digest out{};
  unsigned int len = 0;
  DSB_CHECK(key.size() <= static_cast<std::size_t>(std::numeric_limits<int>::max()),
            "HMAC key of %zu bytes", key.size());
  const unsigned char* r = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                data.data(), data.size(), out.data(), &len);
  DSB_CHECK(r != nullptr && len == out.size(), "HMAC-SHA256 failed");
  return out;
}

// HKDF-SHA256 (RFC 5869) through OpenSSL 3's EVP_KDF.
void HkdfSha256(ByteSpan ikm, ByteSpan salt, ByteSpan info, std::span<std::uint8_t> out) {
  DSB_CHECK(out.size() <= 255 * kSha256Size, "HKDF-SHA256 output of %zu bytes", out.size());
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  DSB_CHECK(kdf != nullptr, "OpenSSL has no HKDF");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  DSB_CHECK(ctx != nullptr, "EVP_KDF_CTX_new failed");
  char digest[] = "SHA256";
  // OSSL_PARAM wants non-const pointers; OpenSSL does not write through them.
  auto octets = [](const char* name, ByteSpan v) {
    return OSSL_PARAM_construct_octet_string(name, const_cast<std::uint8_t*>(v.data()), v.size());
  };
  std::array<OSSL_PARAM, 5> params{};
  std::size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = octets(OSSL_KDF_PARAM_KEY, ikm);
  if (!salt.empty()) params[n++] = octets(OSSL_KDF_PARAM_SALT, salt);
  params[n++] = octets(OSSL_KDF_PARAM_INFO, info);
  params[n] = OSSL_PARAM_construct_end();
  const int rc = EVP_KDF_derive(ctx, out.data(), out.size(), params.data());
  EVP_KDF_CTX_free(ctx);
  DSB_CHECK(rc == 1, "HKDF-SHA256 failed");
}

bool RandomBytes(std::span<std::uint8_t> out) {
  // RAND_bytes takes an int count; the callers ask for a few dozen bytes.
  std::size_t done = 0;
  while (done < out.size()) {
    const std::size_t chunk =
        std::min(out.size() - done, static_cast<std::size_t>(std::numeric_limits<int>::max()));
    if (RAND_bytes(out.data() + done, static_cast<int>(chunk)) != 1) return false;
    done += chunk;
  }
  return true;
}

bool ConstantTimeEqual(ByteSpan a, ByteSpan b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void Cleanse(std::span<std::uint8_t> bytes) {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

std::string Base64(ByteSpan data) {
  DSB_CHECK(data.size() <= static_cast<std::size_t>(std::numeric_limits<int>::max() / 4 * 3 - 3),
            "base64 of %zu bytes", data.size());
  std::string encoded(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()), data.data(),
                                static_cast<int>(data.size()));
  DSB_CHECK(n >= 0, "EVP_EncodeBlock failed");
  encoded.resize(static_cast<std::size_t>(n));
  return encoded;
}

}  // namespace dsb::crypto
