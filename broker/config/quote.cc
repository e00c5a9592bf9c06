#include "broker/config/quote.h"

#include "common/hex.h"

namespace dsb::config {
namespace {

std::string Escape(std::string_view text, std::size_t max_bytes, bool quoted) {
  const bool cut = text.size() > max_bytes;
  if (cut) text = text.substr(0, max_bytes);
  std::string out = quoted ? "\"" : "";
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (quoted && (c == '"' || c == '\\')) {
      out += '\\';
      out += c;
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      AppendHexByte(out, byte);
    }
  }
  if (cut) out += "...";
  if (quoted) out += '"';
  return out;
}

}  // namespace

std::string Quote(std::string_view text, std::size_t max_bytes) {
  return Escape(text, max_bytes, true);
}

std::string Printable(std::string_view text, std::size_t max_bytes) {
  return Escape(text, max_bytes, false);
}

}  // namespace dsb::config
