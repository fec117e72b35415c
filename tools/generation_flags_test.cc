#include "tools/generation_flags.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitserve::cli {
namespace {

// Parses `argv` (after the program name) into flags of a fresh command.
GenerationFlags Parse(std::vector<std::string> argv) {
  CLI::App app;
  GenerationFlags flags;
  AddGenerationFlags(&app, &flags);
  std::reverse(argv.begin(), argv.end());  // CLI11 takes them last first
  app.parse(argv);
  return flags;
}

TEST(GenerationFlags, SeedOnlyWhenGiven) {
  EXPECT_FALSE(Parse({"--prompt-ids", "1"}).Sampling().seed.has_value());
  const GenerationFlags flags = Parse({"--prompt-ids", "1", "--seed", "0", "--temperature", "1"});
  ASSERT_TRUE(flags.Sampling().seed.has_value());
  EXPECT_EQ(*flags.Sampling().seed, 0u);
  EXPECT_EQ(flags.Sampling().temperature, 1.0f);
}

TEST(GenerationFlags, CheckWantsOnePromptAndNonNegativeMaxTokens) {
  EXPECT_FALSE(Parse({}).Check().ok());
  EXPECT_FALSE(Parse({"--chat", "hi", "--max-tokens", "-1"}).Check().ok());
  EXPECT_TRUE(Parse({"--chat", "hi", "--max-tokens", "0"}).Check().ok());
  EXPECT_THROW(Parse({"--chat", "hi", "--prompt", "x"}), CLI::ParseError);
}

TEST(GenerationJson, KeysOfGenerate) {
  GenerationOutput output;
  output.token_ids = {5, 6};
  output.text = "ab";
  output.finish_reason = "length";
  output.prompt_tokens = 3;
  output.seed = 7;
  output.logprobs = {{5, -0.5f, {{5, -0.5f}}}, {6, -1.0f, {{2, -0.25f}}}};
  SamplingParams greedy;
  EXPECT_EQ(GenerationJson(output, greedy).dump(),
            R"({"completion_tokens":2,"finish_reason":"length","prompt_tokens":3,"text":"ab",)"
            R"("token_ids":[5,6]})");
  SamplingParams sampled;
  sampled.temperature = 0.5f;
  sampled.top_logprobs = 1;
  const nlohmann::json json = GenerationJson(output, sampled);
  EXPECT_EQ(json["seed"], 7);
  EXPECT_EQ(json["logprobs"][1].dump(),
            R"({"logprob":-1.0,"token_id":6,"top":[{"logprob":-0.25,"token_id":2}]})");
}

}  // namespace
}  // namespace bitserve::cli
