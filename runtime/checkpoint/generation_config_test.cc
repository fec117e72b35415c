#include "runtime/checkpoint/generation_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

TEST(GenerationConfig, ReadsOneOrManyStopIds) {
  auto one = ParseGenerationConfig(R"({"eos_token_id": 128001})", "g.json", 128256);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->eos_token_ids, std::vector<int>{128001});
  auto many = ParseGenerationConfig(R"({"bos_token_id": 128000, "eos_token_id": [128001, 128009],
                                       "do_sample": true})",
                                    "g.json", 128256);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->eos_token_ids, (std::vector<int>{128001, 128009}));
  auto none = ParseGenerationConfig("{}", "g.json", 10);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->eos_token_ids.empty());
}

TEST(GenerationConfig, BadValuesNameFileAndField) {
  for (const char* bad : {R"({"eos_token_id": "x"})", R"({"eos_token_id": [1, 99]})",
                          R"({"eos_token_id": -1})", "[1]", "{"}) {
    auto c = ParseGenerationConfig(bad, "/m/generation_config.json", 50);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_THAT(std::string(c.status().message()),
                ::testing::HasSubstr("/m/generation_config.json"));
  }
}

TEST(GenerationConfig, FallsBackToModelConfig) {
  ModelConfig model;
  model.vocab_size = 10;
  model.eos_token_ids = {3};
  auto c = LoadGenerationConfig("/nonexistent", model);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{3});
}

}  // namespace
}  // namespace bitserve
