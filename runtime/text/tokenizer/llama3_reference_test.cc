// The real LLaMA-3 tokenizer against independent implementations:
//   - the 46 llama.cpp vectors (../shared/testdata/llama3-bpe-vectors: no BOS, specials not
//   parsed);
//   - tests/data/tokenizer/corpus.jsonl with ids from the JS port of Hugging Face tokenizers
//     (tests/reference/tokenize_corpus.mjs writes corpus_expected.jsonl and
//     invalid_utf8_expected.jsonl);
//   - hf_rust_expected.jsonl: inputs where JS regexes differ from the Rust engines, with ids from
//     Hugging Face's Rust tokenizers (tests/reference/hf_rust_edge_cases.cjs).
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/tokenizer/tokenizer.h"
#include "runtime/text/tokenizer/tokenizer_test_util.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;
using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path
                         << " (tests run from the repository root; the npm reference is "
                            "installed by scripts/install-deps.sh, ../shared beside the clone)";
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<Json> ReadJsonl(const std::string& path) {
  std::vector<Json> lines;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n', absl::SkipEmpty())) {
    lines.push_back(Json::parse(line));
  }
  return lines;
}

// One tokenizer for all tests of a process: loading takes a noticeable fraction of a second.
const Tokenizer& Llama3() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(testing::kLlama3TokenizerDir);
    if (!tok.ok()) {
      ADD_FAILURE() << tok.status();
      std::abort();
    }
    return tok->release();
  }();
  return *tokenizer;
}

TEST(Llama3ReferenceTest, LlamaCppVectors) {
  const std::string dir = testing::kLlama3VectorsDir;
  std::vector<std::string> cases =
      absl::StrSplit(ReadFile(dir + "/llama-bpe.inp"), "\n__ggml_vocab_test__\n");
  if (!cases.empty() && cases.back().empty()) cases.pop_back();
  std::vector<std::string> lines = absl::StrSplit(ReadFile(dir + "/llama-bpe.out"), '\n');
  ASSERT_EQ(cases.size(), 46u);
  ASSERT_GE(lines.size(), cases.size());
  int passed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    Ids expected;
    for (absl::string_view field : absl::StrSplit(lines[i], ' ', absl::SkipEmpty())) {
      int32_t id;
      ASSERT_TRUE(absl::SimpleAtoi(field, &id)) << lines[i];
      expected.push_back(id);
    }
    const Ids got = Llama3().Encode(cases[i]);
    EXPECT_EQ(got, expected) << "vector " << i << ": " << Json(cases[i]).dump();
    passed += got == expected;
  }
  EXPECT_EQ(passed, 46);
}

TEST(Llama3ReferenceTest, CorpusMatchesJsReference) {
  const std::vector<Json> corpus =
      ReadJsonl(std::string(testing::kTokenizerDataDir) + "/corpus.jsonl");
  const std::vector<Json> expected =
      ReadJsonl(std::string(testing::kTokenizerDataDir) + "/corpus_expected.jsonl");
  ASSERT_GE(corpus.size(), 150u);
  ASSERT_EQ(corpus.size(), expected.size())
      << "regenerate with tests/reference/tokenize_corpus.mjs";
  int passed = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    EncodeOptions options;
    options.parse_special = corpus[i].value("parse_special", false);
    const std::string text = corpus[i]["text"].get<std::string>();
    const Ids got = Llama3().Encode(text, options);
    const Ids want = expected[i]["ids"].get<Ids>();
    EXPECT_EQ(got, want) << "corpus line " << i + 1 << ": " << Json(text).dump().substr(0, 200);
    passed += got == want;
  }
  EXPECT_EQ(passed, static_cast<int>(corpus.size()));
}

TEST(Llama3ReferenceTest, CorpusRoundTrips) {
  for (const Json& line : ReadJsonl(std::string(testing::kTokenizerDataDir) + "/corpus.jsonl")) {
    EncodeOptions options;
    options.parse_special = line.value("parse_special", false);
    const std::string text = line["text"].get<std::string>();
    EXPECT_EQ(Llama3().Decode(Llama3().Encode(text, options)), text)
        << Json(text).dump().substr(0, 200);
  }
}

// Ill-formed UTF-8 is encoded as the text with U+FFFD for each maximal ill-formed subpart, as a
// JS caller's TextDecoder would give it.
TEST(Llama3ReferenceTest, InvalidUtf8MatchesJsReference) {
  const std::vector<Json> cases =
      ReadJsonl(std::string(testing::kTokenizerDataDir) + "/invalid_utf8_expected.jsonl");
  ASSERT_GE(cases.size(), 20u);
  for (const Json& c : cases) {
    const std::string hex = c["hex"].get<std::string>();
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
      bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    EXPECT_EQ(Llama3().Encode(bytes), c["ids"].get<Ids>()) << "bytes " << hex;
  }
}

TEST(Llama3ReferenceTest, EdgeCasesMatchHuggingFaceRust) {
  const std::vector<Json> cases =
      ReadJsonl(std::string(testing::kTokenizerDataDir) + "/hf_rust_expected.jsonl");
  ASSERT_GE(cases.size(), 20u);
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(Llama3().Encode(text), c["ids"].get<Ids>()) << Json(text).dump();
  }
}

TEST(Llama3ReferenceTest, SpecialTokens) {
  const Tokenizer& tok = Llama3();
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.bos_id(), 128000);      // from tokenizer_config.json
  EXPECT_FALSE(tok.add_bos_default());  // this tokenizer.json's post-processor adds nothing
  EXPECT_EQ(tok.TokenId("<|eot_id|>"), 128009);
  EXPECT_EQ(tok.TokenId("<|end_of_text|>"), 128001);
  EXPECT_TRUE(tok.IsSpecial(128009));
  EXPECT_FALSE(tok.IsSpecial(15339));
  EXPECT_EQ(tok.TokenBytes(128009), "<|eot_id|>");
  EXPECT_EQ(tok.TokenBytes(15339), "hello");
  EXPECT_EQ(tok.TokenBytes(220), " ");

  EXPECT_THAT(tok.Encode("hello"), ElementsAre(15339));
  EXPECT_THAT(tok.Encode("hello", {.add_bos = true}), ElementsAre(128000, 15339));
  EXPECT_THAT(tok.Encode("<|eot_id|>", {.parse_special = true}), ElementsAre(128009));
  // Not parsed by default: the text is ordinary text.
  EXPECT_THAT(tok.Encode("<|eot_id|>"), ElementsAre(27, 91, 68, 354, 851, 91, 29));
  // The chat-template check of the issue, built from parsed special tokens.
  EXPECT_THAT(
      tok.Encode("<|begin_of_text|>User: hello<|eot_id|>Assistant: ", {.parse_special = true}),
      ElementsAre(128000, 1502, 25, 24748, 128009, 72803, 25, 220));
  const Ids ids = {128000, 9906, 128009};
  EXPECT_EQ(tok.Decode(ids), "<|begin_of_text|>Hello<|eot_id|>");
  EXPECT_EQ(tok.Decode(ids, /*skip_special=*/true), "Hello");
}

}  // namespace
}  // namespace bitserve
