#include "common/hex.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dsb {
namespace {

TEST(Hex, EncodesEveryByteAsTwoLowerCaseDigits) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const std::string hex = HexEncode(all);
  ASSERT_EQ(hex.size(), 512u);
  EXPECT_EQ(hex.substr(0, 8), "00010203");
  EXPECT_EQ(hex.substr(2 * 0x0a, 2), "0a");
  EXPECT_EQ(hex.substr(2 * 0x7f, 2), "7f");
  EXPECT_EQ(hex.substr(510), "ff");
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(Hex, EncodesNothingAsEmptyText) {
  EXPECT_EQ(HexEncode(std::string_view()), "");
  EXPECT_EQ(HexEncode(std::span<const std::uint8_t>()), "");
}

TEST(Hex, SpanAndTextEncodeAlike) {
  const std::vector<std::uint8_t> bytes{0xde, 0xad, 0xbe, 0xef, 0x00};
  EXPECT_EQ(HexEncode(bytes), "deadbeef00");
  EXPECT_EQ(HexEncode(std::string_view("\xde\xad\xbe\xef\x00", 5)), "deadbeef00");
}

TEST(Hex, AppendsOneByte) {
  std::string out = "x";
  AppendHexByte(out, 0x1b);
  EXPECT_EQ(out, "x1b");
  EXPECT_EQ(HexDigit(15), 'f');
  EXPECT_EQ(HexDigit(0), '0');
}

TEST(Hex, ReadsDigitsOfEitherCaseAndRejectsOthers) {
  EXPECT_EQ(HexValue('0'), 0);
  EXPECT_EQ(HexValue('9'), 9);
  EXPECT_EQ(HexValue('a'), 10);
  EXPECT_EQ(HexValue('F'), 15);
  for (char c : std::string("gG/:@`xz \n\0", 11)) EXPECT_EQ(HexValue(c), -1) << int(c);
  EXPECT_TRUE(IsHexText("00ffAB"));
  EXPECT_FALSE(IsHexText(""));
  EXPECT_FALSE(IsHexText("00 ff"));
}

TEST(Hex, DecodeRoundTripsAndRejectsOddOrNonHexText) {
  std::vector<std::uint8_t> all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<std::uint8_t>(b));
  const auto back = HexDecode(HexEncode(all));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, all);
  const auto upper = HexDecode("DEADbeef");
  ASSERT_TRUE(upper.has_value());
  EXPECT_EQ(*upper, (std::vector<std::uint8_t>{0xde, 0xad, 0xbe, 0xef}));
  EXPECT_EQ(HexDecode("abc"), std::nullopt);
  EXPECT_EQ(HexDecode("zz"), std::nullopt);
  EXPECT_EQ(HexDecode("0g"), std::nullopt);
  const auto empty = HexDecode("");
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace dsb
