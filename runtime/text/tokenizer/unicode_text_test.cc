#include "runtime/text/tokenizer/unicode_text.h"

#include "gtest/gtest.h"

namespace bitserve {
namespace {

TEST(ClassifyCodepointTest, LettersOfEveryKind) {
  // Lt, Lm, Lo, many scripts, the astral planes, and KELVIN SIGN (Lu).
  for (char32_t cp : {U'a', U'Z', U'é', U'ǅ', U'ʰ', U'ª', U'中', U'ก', U'א', U'ع', U'क', U'Ж', U'Ω',
                      U'한', U'\U0001D400', U'\U00020000', U'\u212A'}) {
    EXPECT_EQ(ClassifyCodepoint(cp), kLetter) << std::hex << static_cast<uint32_t>(cp);
  }
}

TEST(ClassifyCodepointTest, NumbersOfEveryKind) {
  for (char32_t cp : {U'0', U'9', U'٣' /* Nd */, U'Ⅻ' /* Nl */, U'½' /* No */, U'²', U'①',
                      U'\U0001D7D8' /* 𝟘 */}) {
    EXPECT_EQ(ClassifyCodepoint(cp), kNumber) << std::hex << static_cast<uint32_t>(cp);
  }
}

TEST(ClassifyCodepointTest, WhiteSpaceIsTheUnicodeProperty) {
  for (char32_t cp : {U' ', U'\t', U'\v', U'\f', U'\u0085', U'\u00A0', U'\u1680', U'\u2000',
                      U'\u200A', U'\u2028', U'\u2029', U'\u202F', U'\u205F', U'\u3000'}) {
    EXPECT_EQ(ClassifyCodepoint(cp), kWhiteSpace) << std::hex << static_cast<uint32_t>(cp);
  }
  EXPECT_EQ(ClassifyCodepoint(U'\n'), kWhiteSpace | kLineBreak);
  EXPECT_EQ(ClassifyCodepoint(U'\r'), kWhiteSpace | kLineBreak);
  // Not White_Space, though some regex engines (JS) or older Unicode (U+180E) say so.
  for (char32_t cp : {U'\uFEFF', U'\u180E', U'\u200B', U'\u200D', U'\x1C', U'\x1F'}) {
    EXPECT_EQ(ClassifyCodepoint(cp), 0) << std::hex << static_cast<uint32_t>(cp);
  }
}

TEST(ClassifyCodepointTest, EverythingElseIsZero) {
  for (char32_t cp : {U'!', U'\'', U'_', U'\u0301' /* combining acute */, U'\U0001F999' /* 🦙 */,
                      U'€', U'\uE000' /* private use */, U'\x00', U'\x7F'}) {
    EXPECT_EQ(ClassifyCodepoint(cp), 0) << std::hex << static_cast<uint32_t>(cp);
  }
}

TEST(FoldToAsciiLetterTest, SimpleCaseFolding) {
  EXPECT_EQ(FoldToAsciiLetter(U'S'), 's');
  EXPECT_EQ(FoldToAsciiLetter(U's'), 's');
  EXPECT_EQ(FoldToAsciiLetter(U'\u017F'), 's');  // LATIN SMALL LETTER LONG S
  EXPECT_EQ(FoldToAsciiLetter(U'\u212A'), 'k');  // KELVIN SIGN
  EXPECT_EQ(FoldToAsciiLetter(U'L'), 'l');
  EXPECT_EQ(FoldToAsciiLetter(U'ß'), 0);  // folds to "ss": two characters
  EXPECT_EQ(FoldToAsciiLetter(U'é'), 0);
  EXPECT_EQ(FoldToAsciiLetter(U'1'), 0);
  EXPECT_EQ(FoldToAsciiLetter(U'\''), 0);
}

TEST(DecodeUtf8AtTest, AllLengths) {
  const std::string text = "a\u00e9\u4e2d\U0001F999";
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  Utf8Char c = DecodeUtf8At(s, 0);
  EXPECT_EQ(c.cp, U'a');
  EXPECT_EQ(c.length, 1);
  c = DecodeUtf8At(s, 1);
  EXPECT_EQ(c.cp, U'\u00e9');
  EXPECT_EQ(c.length, 2);
  c = DecodeUtf8At(s, 3);
  EXPECT_EQ(c.cp, U'\u4e2d');
  EXPECT_EQ(c.length, 3);
  c = DecodeUtf8At(s, 6);
  EXPECT_EQ(c.cp, U'\U0001F999');
  EXPECT_EQ(c.length, 4);
}

TEST(Utf8ValidityTest, WellFormed) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ASCII text that is longer than eight bytes"));
  EXPECT_TRUE(IsValidUtf8("\u00e9\u4e2d\U0001F999\U0010FFFF\uFFFD"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("abcdefgh\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // truncated
}

// One U+FFFD per maximal subpart: the examples of Unicode 15 §3.9 (Table 3-8 and around it).
TEST(Utf8ValidityTest, ReplacementOfMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(ReplaceInvalidUtf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a" + r + r + r + "b" + r + "c" + r + r + "d");
  EXPECT_EQ(ReplaceInvalidUtf8("\xC0\xAF\xE0\x80\xBF\xF0\x81\x82\x41"),
            r + r + r + r + r + r + r + r + "A");
  EXPECT_EQ(ReplaceInvalidUtf8("\xED\xA0\x80\xED\xBF\xBF\xED\xAF\x41"),
            r + r + r + r + r + r + r + r + "A");
  EXPECT_EQ(ReplaceInvalidUtf8("\xF4\x91\x92\x93\xFF\x41\x80\xBF\x42"),
            r + r + r + r + r + "A" + r + r + "B");
  EXPECT_EQ(ReplaceInvalidUtf8("\xE1\x80\xE2\xF0\x91\x92\xF1\xBF\x41"), r + r + r + r + "A");
  EXPECT_EQ(ReplaceInvalidUtf8("ok \u4e2d"), "ok \u4e2d");
  EXPECT_EQ(ReplaceInvalidUtf8("\xe4\xb8"), r);  // a truncated character at the end
}

}  // namespace
}  // namespace bitserve
