// Making text from a peer safe to put in a log line or on a terminal.
//
// Peers (local clients, dsbctl users, cluster brokers) choose names, details
// and ids. Written raw, an ESC sequence recolours or clears the operator's
// terminal, a newline forges a log line or a `dsbctl clients` row, bidi
// controls reorder what is shown. EscapeText is the one function every such
// text goes through before it reaches a log line, a reply message or dsbctl's
// human output (JSON output keeps its own escaping by the serializer).
#ifndef DSB_COMMON_ESCAPE_H_
#define DSB_COMMON_ESCAPE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace dsb {

// Longest escaped peer text in a log line unless the caller says otherwise.
inline constexpr std::size_t kMaxEscapedText = 128;

// `text` with everything that could act on a terminal or split a line made
// visible:
//   - printable ASCII (0x20..0x7e) is kept, backslash included;
//   - \n, \r, \t become the two characters "\n", "\r", "\t";
//   - other C0 controls, DEL and bytes that are not valid UTF-8 (stray
//     continuation bytes, truncated or overlong sequences, surrogates, above
//     U+10FFFF) become "\xNN" (NN: the byte in lower-case hex);
//   - valid UTF-8 is kept, except code points that control instead of show:
//     C1 controls (U+0080..U+009F), bidi and zero-width formatting (U+061C,
//     U+200B..U+200F, U+202A..U+202E, U+2060..U+206F, U+FEFF), line and
//     paragraph separators (U+2028, U+2029) and interlinear annotations
//     (U+FFF9..U+FFFB), which become "\u{XXXX}".
// The result is at most `max_bytes` long (REQUIRES: max_bytes >= 3): if the
// escaped text is longer it is cut between two characters or escapes and ends
// with "...".
//
// The result contains no byte below 0x20 and no DEL, and is valid UTF-8.
// EscapeText(EscapeText(t, n), n) == EscapeText(t, n), so text stored escaped
// (client names, at registration) may be escaped again when printed. The price
// of that: a backslash is not escaped, so a name typed as the four characters
// "\x1b" looks like one holding ESC. Neither can act on a terminal.
std::string EscapeText(std::string_view text, std::size_t max_bytes = kMaxEscapedText);

}  // namespace dsb

#endif  // DSB_COMMON_ESCAPE_H_
