// Lower-case hexadecimal text for bytes, and hex digits read back: the one
// place dsb turns bytes into hex (escapes, digests, key files).
//
// Not OpenSSL's OPENSSL_buf2hexstr (upper case, colon-separated) nor
// BN_bn2hex (a number, drops leading zeros): we want plain "00ff..".
#ifndef DSB_COMMON_HEX_H_
#define DSB_COMMON_HEX_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsb {

// The lower-case hex digit for `v`. REQUIRES: v < 16.
inline char HexDigit(unsigned v) { return "0123456789abcdef"[v & 0xfu]; }

// Appends the two lower-case hex digits of `b` ("0a" for 10) to `out`.
inline void AppendHexByte(std::string& out, unsigned char b) {
  out += HexDigit(b >> 4);
  out += HexDigit(b & 0xfu);
}

// `bytes` as lower-case hex, two digits per byte ("" for no bytes).
std::string HexEncode(std::span<const std::uint8_t> bytes);
std::string HexEncode(std::string_view bytes);

// The value of the hex digit `c` (0-9, a-f, A-F), or -1 if `c` is not one.
int HexValue(char c);

// True when `text` is not empty and every character is a hex digit.
bool IsHexText(std::string_view text);

// The bytes that `text` spells in hex (either case). nullopt when `text` has
// an odd number of characters or a character that is not a hex digit.
std::optional<std::vector<std::uint8_t>> HexDecode(std::string_view text);

}  // namespace dsb

#endif  // DSB_COMMON_HEX_H_
