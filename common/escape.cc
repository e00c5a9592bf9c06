#include "common/escape.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/hex.h"

namespace dsb {
namespace {

bool IsContinuation(unsigned char b) { return (b & 0xc0) == 0x80; }

// The length of the valid UTF-8 sequence at the start of `s` (2..4), or 0 if
// it is not one (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF).
std::size_t Utf8Length(std::string_view s, char32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  std::size_t len = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    if (b0 == 0xe0) lo = 0xa0;  // overlong below U+0800
    if (b0 == 0xed) hi = 0x9f;  // surrogates U+D800..U+DFFF
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    if (b0 == 0xf0) lo = 0x90;  // overlong below U+10000
    if (b0 == 0xf4) hi = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  const auto b1 = static_cast<unsigned char>(s[1]);
  if (b1 < lo || b1 > hi) return 0;
  for (std::size_t i = 2; i < len; ++i) {
    if (!IsContinuation(static_cast<unsigned char>(s[i]))) return 0;
  }
  char32_t c = b0 & (len == 2 ? 0x1fu : len == 3 ? 0x0fu : 0x07u);
  for (std::size_t i = 1; i < len; ++i) c = (c << 6) | (static_cast<unsigned char>(s[i]) & 0x3fu);
  *cp = c;
  return len;
}

// Code points that steer rendering instead of showing a glyph.
bool IsControlCodePoint(char32_t c) {
  return (c >= 0x80 && c <= 0x9f) || c == 0x061c || (c >= 0x200b && c <= 0x200f) ||
         (c >= 0x2028 && c <= 0x202e) || (c >= 0x2060 && c <= 0x206f) || c == 0xfeff ||
         (c >= 0xfff9 && c <= 0xfffb);
}

void AppendByteEscape(std::string& out, unsigned char b) {
  out += "\\x";
  AppendHexByte(out, b);
}

void AppendCodePointEscape(std::string& out, char32_t c) {
  out += "\\u{";
  bool started = false;
  for (int shift = 20; shift >= 0; shift -= 4) {
    const auto digit = static_cast<unsigned>((c >> shift) & 0xf);
    if (digit != 0 || started || shift <= 12) {  // at least four digits
      out += HexDigit(digit);
      started = true;
    }
  }
  out += '}';
}

}  // namespace

std::string EscapeText(std::string_view text, std::size_t max_bytes) {
  if (max_bytes < 3) max_bytes = 3;
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 8);
  // Where each unit (a kept character or one escape) ends in `out`, so a cut
  // never splits one; 0 for the empty prefix.
  std::vector<std::size_t> ends{0};
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    std::size_t used = 1;
    if (b >= 0x20 && b < 0x7f) {
      out += static_cast<char>(b);
    } else if (b == '\n') {
      out += "\\n";
    } else if (b == '\r') {
      out += "\\r";
    } else if (b == '\t') {
      out += "\\t";
    } else if (b < 0x80) {
      AppendByteEscape(out, b);  // other C0 controls and DEL
    } else {
      char32_t cp = 0;
      const std::size_t len = Utf8Length(text.substr(i), &cp);
      if (len == 0) {
        AppendByteEscape(out, b);
      } else {
        used = len;
        if (IsControlCodePoint(cp)) {
          AppendCodePointEscape(out, cp);
        } else {
          out.append(text.substr(i, len));
        }
      }
    }
    ends.push_back(out.size());
    i += used;
    if (out.size() > max_bytes) {
      // Cut after the last unit that leaves room for "..." (the empty prefix
      // always does).
      while (ends.back() + 3 > max_bytes) ends.pop_back();
      out.resize(ends.back());
      out += "...";
      return out;
    }
  }
  return out;
}

}  // namespace dsb
