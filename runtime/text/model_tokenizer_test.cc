// A checkpoint's tokenizer is checked against its model at load: another model's tokenizer.json
// copied in (ids beyond vocab_size) is refused, so that no text can become an id the model lacks.
#include "runtime/text/model_tokenizer.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

class ModelTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bitserve_model_tokenizer_" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  ModelConfig Write(const std::string& preset_name, const fs::path& out) {
    auto preset = FindModelPreset(preset_name);
    EXPECT_TRUE(preset.ok());
    EXPECT_TRUE(WriteSyntheticCheckpoint(*preset, out, {}).ok());
    return preset->config;
  }
  fs::path dir_;
};

TEST_F(ModelTokenizerTest, TheModelsOwnTokenizerLoads) {
  const ModelConfig config = Write("tiny", dir_ / "tiny");
  auto tokenizer = LoadModelTokenizer(dir_ / "tiny", config);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ASSERT_NE(*tokenizer, nullptr);
  EXPECT_EQ((*tokenizer)->vocab_size(), config.vocab_size);
}

TEST_F(ModelTokenizerTest, NoTokenizerIsNull) {
  const ModelConfig config = Write("test-gqa", dir_ / "gqa");
  auto tokenizer = LoadModelTokenizer(dir_ / "gqa", config);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(*tokenizer, nullptr);
}

TEST_F(ModelTokenizerTest, AnotherModelsLargerTokenizerIsRefused) {
  // test-gqa has 1,024 ids; the tiny preset's tokenizer is LLaMA-3's (128,256).
  const ModelConfig config = Write("test-gqa", dir_ / "gqa");
  Write("tiny", dir_ / "tiny");
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(dir_ / "tiny" / file, dir_ / "gqa" / file);
  }
  auto tokenizer = LoadModelTokenizer(dir_ / "gqa", config);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(tokenizer.status().message(),
              AllOf(HasSubstr((dir_ / "gqa" / "tokenizer.json").string()),
                    HasSubstr("token ids up to 128255"), HasSubstr("[0, 1024)"),
                    HasSubstr("does not belong to this model")));
}

}  // namespace
}  // namespace bitserve
