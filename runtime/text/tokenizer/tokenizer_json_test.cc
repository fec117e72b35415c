// Bad tokenizer files: each is refused with an error that names the file, the field and what is
// wrong.
#include "runtime/text/tokenizer/tokenizer_json.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/tokenizer/tokenizer.h"
#include "runtime/text/tokenizer/tokenizer_test_util.h"

namespace bitserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using Json = nlohmann::json;

absl::Status LoadStatus(const std::string& text) {
  return Tokenizer::FromJson(text, "bad/tokenizer.json").status();
}

// The tiny valid tokenizer with one change.
absl::Status LoadMutated(const std::function<void(Json&)>& mutate) {
  Json json = testing::TinyTokenizerJson();
  mutate(json);
  return LoadStatus(json.dump());
}

MATCHER_P(FailsWith, text, "") {
  if (arg.ok()) {
    *result_listener << "which loaded fine";
    return false;
  }
  *result_listener << "whose error is: " << arg.message();
  return arg.code() == absl::StatusCode::kInvalidArgument &&
         absl::string_view(arg.message()).find("bad/tokenizer.json: ") == 0 &&
         absl::string_view(arg.message()).find(text) != absl::string_view::npos;
}

TEST(TokenizerJsonTest, TinyTokenizerLoads) {
  EXPECT_TRUE(LoadStatus(testing::TinyTokenizerJson().dump()).ok());
}

TEST(TokenizerJsonTest, NotJson) {
  const std::string valid = testing::TinyTokenizerJson().dump();
  EXPECT_THAT(LoadStatus(valid.substr(0, valid.size() / 2)), FailsWith("not valid JSON"));
  EXPECT_THAT(LoadStatus(""), FailsWith("not valid JSON"));
  EXPECT_THAT(LoadStatus(valid + " trailing"), FailsWith("not valid JSON"));
  EXPECT_THAT(LoadStatus("[1, 2]"),
              FailsWith("expected a JSON object at the top level, got array"));
  EXPECT_THAT(LoadStatus("{\"model\": {\"vocab\": {\"a\": 1, \"b\": \xff}}}"),
              FailsWith("not valid JSON"));
}

TEST(TokenizerJsonTest, MissingFields) {
  EXPECT_THAT(LoadMutated([](Json& j) { j.erase("model"); }), FailsWith("model: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"].erase("type"); }),
              FailsWith("model.type: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"].erase("vocab"); }),
              FailsWith("model.vocab: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"].erase("merges"); }),
              FailsWith("model.merges: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j.erase("pre_tokenizer"); }),
              FailsWith("pre_tokenizer: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j.erase("decoder"); }), FailsWith("decoder: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][1].erase("id"); }),
              FailsWith("added_tokens[1].id: missing"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][0].erase("content"); }),
              FailsWith("added_tokens[0].content: missing"));
}

TEST(TokenizerJsonTest, WrongTypes) {
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"] = "BPE"; }),
              FailsWith("model: expected an object, got string"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["type"] = 3; }),
              FailsWith("model.type: expected a string, got number"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["model"]["vocab"] = Json::array({"a", "b"});
              }),
              FailsWith("model.vocab: expected an object of token -> id, got array"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"]["zz"] = "7"; }),
              FailsWith("model.vocab[\"zz\"]: expected an integer id"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"]["zz"] = -7; }),
              FailsWith("model.vocab[\"zz\"]: id -7 is out of range"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"]["zz"] = 1.5; }),
              FailsWith("model.vocab[\"zz\"]: expected an integer id"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"] = Json::object(); }),
              FailsWith("model.merges: expected an array of merges, got object"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"][2] = 5; }),
              FailsWith("model.merges[2]: expected \"a b\" or [\"a\", \"b\"]"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"][1] = "l l l"; }),
              FailsWith("model.merges[1]: \"l l l\" is not two tokens separated by one space"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"][0] = Json::array({"h"}); }),
              FailsWith("model.merges[0]: a merge pair has 1 tokens (expected two)"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["ignore_merges"] = "yes"; }),
              FailsWith("model.ignore_merges: expected true or false, got string"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"] = Json::object(); }),
              FailsWith("added_tokens: expected an array, got object"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][2]["special"] = 1; }),
              FailsWith("added_tokens[2].special: expected true or false, got number"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][2]["id"] = "302"; }),
              FailsWith("added_tokens[2].id: expected a non-negative integer id, got \"302\""));
}

TEST(TokenizerJsonTest, MergesGivenAsPairsLoad) {
  Json json = testing::TinyTokenizerJson();
  Json pairs = Json::array();
  for (const Json& merge : json["model"]["merges"]) {
    const std::string text = merge.get<std::string>();
    pairs.push_back({text.substr(0, text.find(' ')), text.substr(text.find(' ') + 1)});
  }
  json["model"]["merges"] = pairs;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json.dump(), "pairs.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("hello world"), (std::vector<int32_t>{259, 264}));
}

TEST(TokenizerJsonTest, UnsupportedModels) {
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["type"] = "Unigram"; }),
              FailsWith("model.type: \"Unigram\" is not supported (expected \"BPE\")"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["type"] = "WordPiece"; }),
              FailsWith("model.type: \"WordPiece\" is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["byte_fallback"] = true; }),
              FailsWith("model.byte_fallback: true is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["dropout"] = 0.1; }),
              FailsWith("model.dropout: 0.1 is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; }),
              FailsWith("model.continuing_subword_prefix: \"##\" is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["normalizer"] = {{"type", "NFC"}};
              }),
              FailsWith("normalizer: {\"type\":\"NFC\"} is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["truncation"] = {{"max_length", 8}};
              }),
              FailsWith("truncation: "));
  EXPECT_THAT(LoadMutated([](Json& j) { j["decoder"]["type"] = "Metaspace"; }),
              FailsWith("decoder.type: \"Metaspace\" is not supported (expected \"ByteLevel\")"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][0]["single_word"] = true; }),
              FailsWith("added_tokens[0].single_word: true is not supported"));
}

TEST(TokenizerJsonTest, UnsupportedPreTokenizers) {
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["pre_tokenizer"] = {
                    {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
              }),
              FailsWith("pre_tokenizer: unsupported configuration"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["pre_tokenizer"] = nullptr; }),
              FailsWith("pre_tokenizer: expected an object, got null"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+|\\w+";
              }),
              FailsWith("pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported regex"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}};
              }),
              FailsWith("pre_tokenizer.pretokenizers[0].pattern: expected {\"Regex\": ...}"));
  EXPECT_THAT(
      LoadMutated([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }),
      FailsWith("pre_tokenizer.pretokenizers[0].behavior: \"Removed\" is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }),
              FailsWith("pre_tokenizer.pretokenizers[0].invert: true is not supported"));
  EXPECT_THAT(
      LoadMutated([](Json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; }),
      FailsWith("pre_tokenizer.pretokenizers[1].use_regex: must be false"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["pre_tokenizer"]["pretokenizers"][1].erase("add_prefix_space");
              }),
              FailsWith("pre_tokenizer.pretokenizers[1].add_prefix_space: must be false"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                auto& steps = j["pre_tokenizer"]["pretokenizers"];
                std::swap(steps[0], steps[1]);
              }),
              FailsWith("pre_tokenizer.pretokenizers[0]: expected a Split"));
}

TEST(TokenizerJsonTest, UnsupportedPostProcessors) {
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["post_processor"] = {{"type", "BertProcessing"}};
              }),
              FailsWith("post_processor.type: \"BertProcessing\" is not supported"));
  EXPECT_THAT(LoadMutated([](Json& j) {
                j["post_processor"] = {{"type", "TemplateProcessing"},
                                       {"single",
                                        {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                         {{"SpecialToken", {{"id", "<|eot|>"}, {"type_id", 0}}}}}}};
              }),
              FailsWith("post_processor.single: unsupported template"));
}

TEST(TokenizerJsonTest, InconsistentVocabulary) {
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"]["zz"] = 5; }),
              FailsWith("model.vocab: id 5 is used by both"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"].erase("\u0120"); }),
              FailsWith("model.vocab: has no token for byte 0x20"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"] = Json::object(); }),
              FailsWith("model.vocab: is empty"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"]["zz"] = 1 << 30; }),
              FailsWith("model.vocab[\"zz\"]: id 1073741824 is larger than"));
  // A duplicate key in the JSON text itself.
  const std::string text = testing::TinyTokenizerJson().dump();
  std::string duplicated = text;
  duplicated.replace(duplicated.find("\"vocab\":{") + 9, 0, "\"aa\":999,");
  EXPECT_THAT(LoadStatus(duplicated), FailsWith("model.vocab: token \"aa\" appears twice"));
}

// Ids index dense per-id tables: a small file claiming a huge id (16777215 took 600 MB and
// seconds under the fuzzer's sanitizers) is refused; a gap of unused ids is still fine.
TEST(TokenizerJsonTest, IdsFarBeyondTheTokensAreRefused) {
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["vocab"]["zz"] = (1 << 24) - 1; }),
              FailsWith("model.vocab[\"zz\"]: id 16777215 leaves most ids unused (270 tokens; "
                        "ids below 66076 are accepted)"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][2]["id"] = 1 << 20; }),
              FailsWith("added_tokens[2].id: id 1048576 leaves most ids unused"));
  EXPECT_TRUE(LoadMutated([](Json& j) { j["added_tokens"][2]["id"] = 60000; }).ok());
}

TEST(TokenizerJsonTest, MergesOfUnknownTokens) {
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"].push_back("he qq"); }),
              FailsWith("model.merges[10]: token \"qq\" is not in model.vocab"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"].push_back("qq he"); }),
              FailsWith("model.merges[10]: token \"qq\" is not in model.vocab"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["model"]["merges"].push_back("hello hello"); }),
              FailsWith("model.merges[10]: merged token \"hellohello\" is not in model.vocab"));
}

TEST(TokenizerJsonTest, InconsistentAddedTokens) {
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][1]["id"] = 300; }),
              FailsWith("added_tokens[1].id: 300 is also the id of added_tokens[0]"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][1]["content"] = "<|bos|>"; }),
              FailsWith("added_tokens[1].content: \"<|bos|>\" is also added_tokens[0]"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][2]["id"] = 65; }),
              FailsWith("added_tokens[2].id: 65 is already model.vocab's \"A\""));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][2]["content"] = "hello"; }),
              FailsWith("added_tokens[2].id: 302 but model.vocab gives \"hello\" id 259"));
  EXPECT_THAT(LoadMutated([](Json& j) { j["added_tokens"][2]["content"] = ""; }),
              FailsWith("added_tokens[2].content: is empty"));
}

class TokenizerConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bitserve_tokenizer_config_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    Write("tokenizer.json", testing::TinyTokenizerJson().dump());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(TokenizerConfigTest, NoConfigMeansNoBos) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), std::nullopt);
  EXPECT_FALSE((*tok)->add_bos_default());
  EXPECT_EQ((*tok)->Encode("hello", {.parse_special = false, .add_bos = true}),
            (std::vector<int32_t>{259}));
}

TEST_F(TokenizerConfigTest, BosFromConfigAsStringOrObject) {
  Write("tokenizer_config.json", R"({"bos_token": "<|bos|>", "add_bos_token": true})");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir_ / "tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 300);
  EXPECT_TRUE((*tok)->add_bos_default());
  EXPECT_EQ((*tok)->Encode("hello", {.add_bos = true}), (std::vector<int32_t>{300, 259}));

  Write("tokenizer_config.json", R"({"bos_token": {"content": "<|eot|>", "lstrip": false}})");
  tok = Tokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 301);
  EXPECT_FALSE((*tok)->add_bos_default());
}

TEST_F(TokenizerConfigTest, BosFromPostProcessorTemplate) {
  Json json = testing::TinyTokenizerJson();
  json["post_processor"] = {{"type", "Sequence"},
                            {"processors",
                             {{{"type", "ByteLevel"}, {"add_prefix_space", true}},
                              {{"type", "TemplateProcessing"},
                               {"single",
                                {{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                 {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}}}};
  Write("tokenizer.json", json.dump());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 300);
  EXPECT_TRUE((*tok)->add_bos_default());
}

TEST_F(TokenizerConfigTest, BadConfigIsAnError) {
  Write("tokenizer_config.json", R"({"bos_token": "<|nope|>"})");
  absl::Status status = Tokenizer::Load(dir_).status();
  EXPECT_THAT(status.message(), AllOf(HasSubstr("tokenizer_config.json: bos_token"),
                                      HasSubstr("\"<|nope|>\" is not a token")));
  Write("tokenizer_config.json", R"({"bos_token": 7})");
  EXPECT_THAT(Tokenizer::Load(dir_).status().message(),
              HasSubstr("tokenizer_config.json: bos_token: expected a string or"));
  Write("tokenizer_config.json", R"({"add_bos_token": true})");
  EXPECT_THAT(Tokenizer::Load(dir_).status().message(),
              HasSubstr("tokenizer_config.json: add_bos_token: is true but no bos_token"));
  Write("tokenizer_config.json", R"({"bos_token": )");
  EXPECT_THAT(Tokenizer::Load(dir_).status().message(),
              HasSubstr("tokenizer_config.json: not valid JSON"));
}

TEST(TokenizerLoadTest, MissingFile) {
  absl::Status status = Tokenizer::Load("/nonexistent/dir/tokenizer.json").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              HasSubstr("/nonexistent/dir/tokenizer.json: no such file or directory"));
}

}  // namespace
}  // namespace bitserve
