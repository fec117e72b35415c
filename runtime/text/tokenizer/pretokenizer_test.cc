#include "runtime/text/tokenizer/pretokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using Pieces = std::vector<std::string>;

Pieces Split(absl::string_view text) {
  Pieces pieces;
  for (absl::string_view piece : SplitLlama3(text)) pieces.emplace_back(piece);
  return pieces;
}

TEST(Llama3PreTokenizerTest, EmptyText) { EXPECT_TRUE(SplitLlama3("").empty()); }

TEST(Llama3PreTokenizerTest, WordsTakeOneLeadingNonLetter) {
  EXPECT_THAT(Split("Hello world"), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split("Hello, world!"), ElementsAre("Hello", ",", " world", "!"));
  EXPECT_THAT(Split("\tfoo"), ElementsAre("\tfoo"));  // \t is neither \r, \n, L nor N
  EXPECT_THAT(Split("$foo"), ElementsAre("$foo"));
  EXPECT_THAT(Split("\nfoo"), ElementsAre("\n", "foo"));  // \n may not lead a word
  EXPECT_THAT(Split("1foo"), ElementsAre("1", "foo"));    // nor may a number
  EXPECT_THAT(Split("$$foo"), ElementsAre("$$", "foo"));  // punctuation runs are greedy
  EXPECT_THAT(Split("e\u0301t\u00e9"), ElementsAre("e", "\u0301t\u00e9"));  // a mark is not \p{L}
}

TEST(Llama3PreTokenizerTest, ContractionsInAnyCase) {
  EXPECT_THAT(Split("I'm"), ElementsAre("I", "'m"));
  EXPECT_THAT(Split("YOU'RE"), ElementsAre("YOU", "'RE"));
  EXPECT_THAT(Split("we'Ve they'lL she'D it'S don'T"),
              ElementsAre("we", "'Ve", " they", "'lL", " she", "'D", " it", "'S", " don", "'T"));
  // The contraction wins over a word starting with the apostrophe...
  EXPECT_THAT(Split("'sandwich"), ElementsAre("'s", "andwich"));
  EXPECT_THAT(Split("'really"), ElementsAre("'re", "ally"));
  // ...but needs the apostrophe first: after a space, " '" is punctuation.
  EXPECT_THAT(Split(" 's"), ElementsAre(" '", "s"));
  EXPECT_THAT(Split("'x"), ElementsAre("'x"));
  EXPECT_THAT(Split("'l"), ElementsAre("'l"));  // 'l alone is no contraction
  EXPECT_THAT(Split("''s"), ElementsAre("''", "s"));
  // U+2019 is not an apostrophe to the regex.
  EXPECT_THAT(Split("it\u2019s"), ElementsAre("it", "\u2019s"));
  // Unicode simple case folding, as the Rust engines do it: LONG S matches s.
  EXPECT_THAT(Split("it'\u017ft"), ElementsAre("it", "'\u017f", "t"));
}

TEST(Llama3PreTokenizerTest, NumbersInGroupsOfThree) {
  EXPECT_THAT(Split("1234567"), ElementsAre("123", "456", "7"));
  EXPECT_THAT(Split("3.14"), ElementsAre("3", ".", "14"));
  EXPECT_THAT(Split("\u0663\u0664\u0665\u0666"), ElementsAre("\u0663\u0664\u0665", "\u0666"));
  EXPECT_THAT(Split("\u00bd\u00b2x"), ElementsAre("\u00bd\u00b2", "x"));  // No
  EXPECT_THAT(Split(" 42"), ElementsAre(" ", "42"));  // a space never joins a number
}

TEST(Llama3PreTokenizerTest, PunctuationTakesOneSpaceAndTrailingNewlines) {
  EXPECT_THAT(Split(" (x)"), ElementsAre(" (", "x", ")"));
  EXPECT_THAT(Split("!!!\n\nx"), ElementsAre("!!!\n\n", "x"));
  EXPECT_THAT(Split("?!\r\n"), ElementsAre("?!\r\n"));
  EXPECT_THAT(Split("  ..."), ElementsAre(" ", " ..."));
  EXPECT_THAT(Split("\U0001F999.cpp"), ElementsAre("\U0001F999.", "cpp"));
  EXPECT_THAT(Split(". \n"), ElementsAre(".", " \n"));
}

TEST(Llama3PreTokenizerTest, WhitespaceRuns) {
  // \s+(?!\S): the last space goes to the next word.
  EXPECT_THAT(Split("a   b"), ElementsAre("a", "  ", " b"));
  // At the end of the text the whole run matches.
  EXPECT_THAT(Split("a   "), ElementsAre("a", "   "));
  // A single space before a digit: \s+ gives it back, then plain \s+ takes it.
  EXPECT_THAT(Split("a 1"), ElementsAre("a", " ", "1"));
  // \s*[\r\n]+ ends after the last line break of the run.
  EXPECT_THAT(Split("a \n \n  b"), ElementsAre("a", " \n \n", " ", " b"));
  EXPECT_THAT(Split("\n\n\n"), ElementsAre("\n\n\n"));
  EXPECT_THAT(Split("\t\n"), ElementsAre("\t\n"));
  EXPECT_THAT(Split("x\r\n\r\ny"), ElementsAre("x", "\r\n\r\n", "y"));
  EXPECT_THAT(Split("  \u00a0\u3000x"), ElementsAre("  \u00a0", "\u3000x"));
  EXPECT_THAT(Split("\u3000\u3000"), ElementsAre("\u3000\u3000"));
}

TEST(Llama3PreTokenizerTest, WhiteSpaceIsTheUnicodePropertyNotJavaScripts) {
  // U+0085 is White_Space: it gives way like a space.
  EXPECT_THAT(Split("a \u0085b"), ElementsAre("a", " ", "\u0085b"));
  // U+FEFF is not: it is punctuation-like and takes the space before it.
  EXPECT_THAT(Split("a \ufeffb"), ElementsAre("a", " \ufeff", "b"));
}

TEST(Llama3PreTokenizerTest, PiecesTileTheText) {
  const std::string text =
      "Mixed: \u4e2d\u6587 ENGLISH 123456 \U0001F468\u200D\U0001F469 \u0645\u0631\u062D\u0628\u0627"
      "  \t\r\n x's 'LL \u00a0\u00a0 end  ";
  std::string joined;
  for (absl::string_view piece : SplitLlama3(text)) {
    EXPECT_FALSE(piece.empty());
    joined += std::string(piece);
  }
  EXPECT_EQ(joined, text);
}

TEST(Llama3PreTokenizerTest, LengthMatchesSplit) {
  const std::string text = "Hello  world\n\n!!";
  std::vector<size_t> lengths;
  for (size_t pos = 0; pos < text.size();) {
    lengths.push_back(Llama3PreTokenLength(text, pos));
    pos += lengths.back();
  }
  EXPECT_THAT(lengths, ElementsAreArray({5u, 1u, 6u, 2u, 2u}));
}

}  // namespace
}  // namespace bitserve
