#include "runtime/text/tokenizer/byte_level.h"

#include <set>

#include "gtest/gtest.h"

namespace bitserve {
namespace {

TEST(ByteLevelTest, KnownCharacters) {
  EXPECT_EQ(ByteLevelChar(' '), "\u0120");   // Ġ
  EXPECT_EQ(ByteLevelChar('\n'), "\u010A");  // Ċ
  EXPECT_EQ(ByteLevelChar('\t'), "\u0109");  // ĉ
  EXPECT_EQ(ByteLevelChar(0x00), "\u0100");  // Ā: the first unprintable byte
  EXPECT_EQ(ByteLevelChar('A'), "A");
  EXPECT_EQ(ByteLevelChar(0xA1), "\u00A1");  // ¡ stands for itself
  EXPECT_EQ(ByteLevelChar(0xAD), "\u0143");  // the soft hyphen byte: the last unprintable one
  EXPECT_EQ(ByteLevelChar(0xFF), "\u00FF");
  EXPECT_EQ(ByteLevelCodepoint(0x7F), U'\u0121');
}

TEST(ByteLevelTest, AlphabetIsABijection) {
  std::set<std::string> seen;
  for (int b = 0; b < 256; ++b) {
    const std::string c(ByteLevelChar(static_cast<unsigned char>(b)));
    EXPECT_TRUE(seen.insert(c).second) << b;
    EXPECT_EQ(ByteLevelDecode(c), std::string(1, static_cast<char>(b)));
  }
}

TEST(ByteLevelTest, RoundTrip) {
  using namespace std::string_literals;
  const std::string bytes = "Hello, \xE4\xB8\xAD\n\t\x00\xFF end"s;
  EXPECT_EQ(ByteLevelEncode("Hi there\n"), "Hi\u0120there\u010A");
  EXPECT_EQ(ByteLevelDecode(ByteLevelEncode(bytes)), bytes);
}

TEST(ByteLevelTest, DecodeRefusesCharactersOutsideTheAlphabet) {
  EXPECT_EQ(ByteLevelDecode(" "), std::nullopt);       // the space itself is not in it
  EXPECT_EQ(ByteLevelDecode("\u4e2d"), std::nullopt);  // three-byte characters never are
  EXPECT_EQ(ByteLevelDecode("\u0144"), std::nullopt);  // one past the last mapped code point
  EXPECT_EQ(ByteLevelDecode("\xC4"), std::nullopt);    // truncated
  EXPECT_EQ(ByteLevelDecode(""), std::string());
}

}  // namespace
}  // namespace bitserve
