// EscapeText (common/escape.h): peer text made safe for logs and terminals.
#include "common/escape.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace dsb {
namespace {

// No byte an xterm acts on: C0, DEL; and no C1 control in UTF-8 form.
bool Inert(const std::string& s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x20 || b == 0x7f) return false;
    if (b == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xa0) return false;
  }
  return true;
}

TEST(EscapeText, KeepsPrintableTextAndValidUtf8) {
  EXPECT_EQ(EscapeText("digiscope-4242 (ws1)"), "digiscope-4242 (ws1)");
  EXPECT_EQ(EscapeText("Zürich \xe2\x82\xac \xf0\x9f\x98\x80"), "Zürich \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(EscapeText(""), "");
}

TEST(EscapeText, MakesControlsVisible) {
  const struct {
    std::string in;
    std::string out;
  } cases[] = {
      {"a\x1b[2Jb", "a\\x1b[2Jb"},                       // ESC: clear screen
      {"x\nINFO fake line", "x\\nINFO fake line"},       // forged log line
      {"r\rt\tu", "r\\rt\\tu"},
      {std::string("nul\0x", 5), "nul\\x00x"},
      {"del\x7f", "del\\x7f"},
      {"c1\xc2\x9b" "31m", "c1\\u{009b}31m"},            // C1 CSI as UTF-8
      {"bidi\xe2\x80\xaegnp.exe", "bidi\\u{202e}gnp.exe"},  // right-to-left override
      {"zw\xe2\x80\x8bsp", "zw\\u{200b}sp"},
      {"ls\xe2\x80\xa8x", "ls\\u{2028}x"},
      {"bom\xef\xbb\xbf", "bom\\u{feff}"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(EscapeText(c.in), c.out);
    EXPECT_TRUE(Inert(EscapeText(c.in)));
  }
}

TEST(EscapeText, EscapesBytesThatAreNotUtf8) {
  EXPECT_EQ(EscapeText("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(EscapeText("\x80"), "\\x80");                       // stray continuation
  EXPECT_EQ(EscapeText("\xc3"), "\\xc3");                       // truncated
  EXPECT_EQ(EscapeText("\xc0\xaf"), "\\xc0\\xaf");              // overlong '/'
  EXPECT_EQ(EscapeText("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");     // overlong
  EXPECT_EQ(EscapeText("\xed\xa0\x80"), "\\xed\\xa0\\x80");     // surrogate
  EXPECT_EQ(EscapeText("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(EscapeText("\xc2\x1b"), "\\xc2\\x1b");              // a control hidden after a lead
}

TEST(EscapeText, CutsLongTextBetweenUnits) {
  EXPECT_EQ(EscapeText(std::string(300, 'n'), 64), std::string(61, 'n') + "...");
  EXPECT_EQ(EscapeText(std::string(64, 'n'), 64), std::string(64, 'n'));
  // An escape is never split: "aaaa" + "\x1b" (4 bytes) does not fit in 8 with "...".
  EXPECT_EQ(EscapeText("aaaa\x1b" "bbbb", 8), "aaaa...");
  // Nor is a UTF-8 character.
  EXPECT_EQ(EscapeText("aaaa\xe2\x82\xac" "bbbb", 9), "aaaa...");
  EXPECT_EQ(EscapeText(std::string(100, '\n'), 20).size(), 19u);  // 8 "\n" + "..."
}

TEST(EscapeText, IsAFixedPoint) {
  std::mt19937 rng(20261206);
  std::printf("seed 20261206\n");
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 90, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    const std::size_t max = 3 + rng() % 80;
    const std::string once = EscapeText(s, max);
    EXPECT_LE(once.size(), max);
    EXPECT_TRUE(Inert(once)) << once;
    EXPECT_EQ(EscapeText(once, max), once);
  }
}

}  // namespace
}  // namespace dsb
