// Behaviour of BpeTokenizer on the tiny tokenizer of tokenizer_test_util.h (ids listed there).
#include "runtime/text/tokenizer/bpe_tokenizer.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/tokenizer/tokenizer_test_util.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

constexpr int32_t kBos = 300, kEot = 301, kTool = 302;

std::unique_ptr<Tokenizer> Load(const Json& json) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json.dump(), "tiny.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

int32_t Byte(char c) { return static_cast<unsigned char>(c); }

TEST(BpeTokenizerTest, MergesAndIgnoreMerges) {
  auto tok = Load(testing::TinyTokenizerJson());
  EXPECT_THAT(tok->Encode(""), IsEmpty());
  EXPECT_THAT(tok->Encode("hello world"), ElementsAre(259, 264));
  EXPECT_THAT(tok->Encode("hellohello"), ElementsAre(259, 259));  // one pre-token, merged
  EXPECT_THAT(tok->Encode("aaa"), ElementsAre(265, Byte('a')));   // leftmost first
  EXPECT_THAT(tok->Encode("Hello"), ElementsAre(Byte('H'), Byte('e'), 257, Byte('o')));
}

TEST(BpeTokenizerTest, IgnoreMergesEmitsVocabularyWordsWhole) {
  // "Ġwor" + "ld" -> "Ġworld" needs the merge "Ġwor ld"; without it, merging stops at
  // Ġwor + ld, unless ignore_merges finds " world" in the vocabulary first.
  Json json = testing::TinyTokenizerJson();
  json["model"]["merges"].erase(8);  // "Ġwor ld"
  json["model"]["ignore_merges"] = true;
  EXPECT_THAT(Load(json)->Encode(" world"), ElementsAre(264));
  json["model"]["ignore_merges"] = false;
  EXPECT_THAT(Load(json)->Encode(" world"), ElementsAre(262, 263));
}

TEST(BpeTokenizerTest, SpecialTokensParsedOnlyWhenAsked) {
  auto tok = Load(testing::TinyTokenizerJson());
  const Ids as_text = tok->Encode("<|eot|>");
  EXPECT_THAT(as_text, ::testing::Not(::testing::Contains(kEot)));
  EXPECT_EQ(tok->Decode(as_text), "<|eot|>");
  EXPECT_THAT(tok->Encode("<|eot|>", {.parse_special = true}), ElementsAre(kEot));
  EXPECT_THAT(tok->Encode("hello<|eot|><|bos|>hello", {.parse_special = true}),
              ElementsAre(259, kEot, kBos, 259));
}

TEST(BpeTokenizerTest, NonSpecialAddedTokensAlwaysMatch) {
  auto tok = Load(testing::TinyTokenizerJson());
  EXPECT_THAT(tok->Encode("hello<tool>hello"), ElementsAre(259, kTool, 259));
  EXPECT_THAT(tok->Encode("hello<tool>hello", {.parse_special = true}),
              ElementsAre(259, kTool, 259));
  // The text around an added token is encoded on its own: no space joins " <tool>".
  EXPECT_THAT(tok->Encode(" <tool> "), ElementsAre(Byte(' '), kTool, Byte(' ')));
}

TEST(BpeTokenizerTest, SkippedSpecialMatchHidesTheTextItCovers) {
  // As in Hugging Face: matching is leftmost-longest over all added tokens, and a special match
  // that is not parsed stays text, including any shorter added token inside it.
  Json json = testing::TinyTokenizerJson();
  json["added_tokens"][2]["content"] = "eot";
  json["added_tokens"][2]["normalized"] = false;  // in the same (raw-text) pass as <|eot|>
  auto tok = Load(json);
  const Ids ids = tok->Encode("<|eot|>");
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(kTool)));
  EXPECT_THAT(tok->Encode("eot"), ElementsAre(kTool));
  // A normalized=true token is matched in a second pass, over what the first left as text.
  json["added_tokens"][2]["normalized"] = true;
  EXPECT_THAT(Load(json)->Encode("<|eot|>"), ::testing::Contains(kTool));
}

TEST(BpeTokenizerTest, LeftmostLongestAddedTokens) {
  Json json = testing::TinyTokenizerJson();
  json["added_tokens"][0]["content"] = "<|e";
  json["added_tokens"][0]["special"] = false;
  auto tok = Load(json);
  EXPECT_THAT(tok->Encode("<|eot|>", {.parse_special = true}), ElementsAre(kEot));
  EXPECT_THAT(tok->Encode("x<|e<|eot|>", {.parse_special = true}),
              ElementsAre(Byte('x'), kBos, kEot));
}

TEST(BpeTokenizerTest, LstripAndRstripTakeWhitespace) {
  Json json = testing::TinyTokenizerJson();
  json["added_tokens"][2]["lstrip"] = true;
  json["added_tokens"][2]["rstrip"] = true;
  auto tok = Load(json);
  EXPECT_THAT(tok->Encode("hello \u00a0 <tool>\t\n world"),
              ElementsAre(259, kTool, Byte('w'), 261, 263));
  EXPECT_THAT(tok->Encode("<tool>  <tool>"), ElementsAre(kTool, kTool));
}

TEST(BpeTokenizerTest, DecodeAndTokenBytes) {
  auto tok = Load(testing::TinyTokenizerJson());
  EXPECT_EQ(tok->TokenBytes(264), " world");
  EXPECT_EQ(tok->TokenBytes(Byte('\n')), "\n");
  EXPECT_EQ(tok->TokenBytes(kEot), "<|eot|>");
  EXPECT_EQ(tok->TokenBytes(-1), "");
  EXPECT_EQ(tok->TokenBytes(299), "");  // a gap in the ids
  EXPECT_EQ(tok->TokenBytes(100000), "");
  const Ids ids = {kBos, 259, 264, kEot, kTool};
  EXPECT_EQ(tok->Decode(ids), "<|bos|>hello world<|eot|><tool>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), "hello world<tool>");
  // Half a character decodes to U+FFFD; the whole character to itself.
  EXPECT_EQ(tok->Decode(Ids{0xE4, 0xB8}), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->Decode(Ids{0xE4, 0xB8, 0xAD}), "\u4e2d");
  EXPECT_EQ(tok->Decode(Ids{-5, 299, 259}), "hello");
}

TEST(BpeTokenizerTest, Lookups) {
  auto tok = Load(testing::TinyTokenizerJson());
  EXPECT_EQ(tok->vocab_size(), 303);
  EXPECT_EQ(tok->TokenId("<|eot|>"), kEot);
  EXPECT_EQ(tok->TokenId("\u0120world"), 264);  // the byte-level string form
  EXPECT_EQ(tok->TokenId(" world"), std::nullopt);
  EXPECT_EQ(tok->TokenId("nope"), std::nullopt);
  EXPECT_TRUE(tok->IsSpecial(kBos));
  EXPECT_TRUE(tok->IsSpecial(kEot));
  EXPECT_FALSE(tok->IsSpecial(kTool));
  EXPECT_FALSE(tok->IsSpecial(259));
  EXPECT_FALSE(tok->IsSpecial(-1));
  EXPECT_FALSE(tok->IsSpecial(5000));
  EXPECT_EQ(tok->bos_id(), std::nullopt);
}

TEST(BpeTokenizerTest, InvalidUtf8BecomesReplacementCharacters) {
  auto tok = Load(testing::TinyTokenizerJson());
  // U+FFFD is EF BF BD: three byte tokens here (the tiny vocabulary has no merges for it).
  EXPECT_THAT(tok->Encode("\xff"), ElementsAre(0xEF, 0xBF, 0xBD));
  EXPECT_EQ(tok->Encode("hello\xffhello"), tok->Encode("hello\uFFFDhello"));
  EXPECT_EQ(tok->Encode("\xe4\xb8hello"), tok->Encode("\uFFFDhello"));
  EXPECT_EQ(tok->Decode(tok->Encode("a\xc0\xafz")), "a\uFFFD\uFFFDz");
}

TEST(BpeTokenizerTest, ConcurrentEncodersAgree) {
  auto tok = Load(testing::TinyTokenizerJson());
  std::string text;
  for (int i = 0; i < 200; ++i) text += "hello world aaaa helloworld " + std::to_string(i) + " ";
  const Ids expected = tok->Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> matches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 20; ++r) matches[t] += tok->Encode(text) == expected;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(matches, ElementsAre(20, 20, 20, 20));
}

}  // namespace
}  // namespace bitserve
