#include "runtime/checkpoint/model_config.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bitserve {
namespace {

using ::testing::HasSubstr;

// config.json of microsoft/bitnet-b1.58-2B-4T.
constexpr char k2B4T[] = R"({
  "architectures": ["BitNetForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "relu2", "hidden_size": 2560,
  "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 4096,
  "model_type": "bitnet", "rms_norm_eps": 1e-05, "num_attention_heads": 20,
  "num_hidden_layers": 30, "num_key_value_heads": 5, "rope_theta": 500000.0,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 128256,
  "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                          "quantization_mode": "offline"}
})";

TEST(ModelConfig, Parses2B4T) {
  auto c = ParseModelConfig(k2B4T, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->intermediate_size, 6912);
  EXPECT_EQ(c->num_hidden_layers, 30);
  EXPECT_EQ(c->num_attention_heads, 20);
  EXPECT_EQ(c->num_key_value_heads, 5);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->kv_dim(), 640);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{128001});
  EXPECT_EQ(c->linear_class, LinearClass::kAutoBitLinear);
}

TEST(ModelConfig, RoundTripsThroughJson) {
  auto c = ParseModelConfig(k2B4T, "config.json");
  ASSERT_TRUE(c.ok());
  c->eos_token_ids = {128001, 128009};
  c->linear_class = LinearClass::kBitLinear;
  auto again = ParseModelConfig(ModelConfigToJson(*c), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->eos_token_ids, c->eos_token_ids);
  EXPECT_EQ(again->linear_class, LinearClass::kBitLinear);
  EXPECT_EQ(again->head_dim, 128);
}

struct BadCase {
  std::string patch;   // JSON merge patch applied to the 2B4T config
  std::string expect;  // substring of the error
};

class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, NamesTheField) {
  nlohmann::json j = nlohmann::json::parse(k2B4T);
  j.merge_patch(nlohmann::json::parse(GetParam().patch));
  auto c = ParseModelConfig(j.dump(), "/m/config.json");
  ASSERT_FALSE(c.ok()) << GetParam().patch;
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/m/config.json"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(GetParam().expect));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BadConfig,
    ::testing::Values(
        BadCase{R"({"hidden_size": null})", "\"hidden_size\" is missing"},
        BadCase{R"({"hidden_size": "2560"})", "\"hidden_size\" must be an integer"},
        BadCase{R"({"hidden_size": 2560.5})", "\"hidden_size\" must be an integer"},
        BadCase{R"({"num_hidden_layers": 0})", "\"num_hidden_layers\" must be in"},
        BadCase{R"({"vocab_size": -3})", "\"vocab_size\" must be in"},
        BadCase{R"({"num_key_value_heads": 3})", "num_key_value_heads"},
        BadCase{R"({"hidden_act": "silu"})", "\"hidden_act\" must be \"relu2\""},
        BadCase{R"({"model_type": "llama"})", "\"model_type\""},
        BadCase{R"({"architectures": ["LlamaForCausalLM"]})", "\"architectures\""},
        BadCase{R"({"rope_scaling": {"type": "linear"}})", "\"rope_scaling.factor\" is missing"},
        BadCase{R"({"rope_scaling": {"rope_type": "longrope", "factor": 2}})",
                "\"rope_scaling.rope_type\" \"longrope\" is not supported"},
        BadCase{R"({"rope_scaling": {"rope_type": "linear", "factor": 0.5}})",
                "\"rope_scaling.factor\" must be >= 1"},
        BadCase{R"({"rope_scaling": {"rope_type": "yarn", "factor": "4"}})",
                "\"rope_scaling.factor\" must be a number"},
        BadCase{R"({"rope_scaling": {"rope_type": "llama3", "factor": 8}})",
                "\"rope_scaling.original_max_position_embeddings\" is missing"},
        BadCase{R"({"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4,
                    "high_freq_factor": 1, "original_max_position_embeddings": 8192}})",
                "\"rope_scaling.high_freq_factor\" must be above low_freq_factor"},
        BadCase{R"({"rope_scaling": [1]})", "\"rope_scaling\" must be an object"},
        BadCase{R"({"rope_parameters": {"rope_type": "linear", "factor": 2},
                    "rope_scaling": {"rope_type": "linear", "factor": 2}})",
                "\"rope_scaling\" and rope_parameters are both set"},
        BadCase{R"({"attention_bias": true})", "\"attention_bias\""},
        BadCase{R"({"eos_token_id": "x"})", "\"eos_token_id\""},
        BadCase{R"({"eos_token_id": 999999})", "eos_token_id"},
        BadCase{R"({"rope_theta": "big"})", "\"rope_theta\" must be a number"},
        BadCase{R"({"tie_word_embeddings": 1})", "\"tie_word_embeddings\" must be true or false"},
        BadCase{R"({"head_dim": 127})", "head_dim"},
        BadCase{R"({"intermediate_size": 6910})", "must be a multiple of 4"},
        BadCase{R"({"quantization_config": null})", "\"quantization_config\" is missing"},
        BadCase{R"({"quantization_config": {"quant_method": "gptq"}})", "\"quant_method\""},
        BadCase{R"({"quantization_config": {"linear_class": "fancy"}})", "\"linear_class\""},
        BadCase{R"({"quantization_config": {"quantization_mode": "online"}})",
                "\"quantization_mode\""},
        BadCase{R"({"quantization_config": {"use_rms_norm": true}})", "\"use_rms_norm\""}));

TEST(ModelConfig, ReadsEachRopeScalingTypeAndWritesItBack) {
  const char* cases[] = {
      R"({"rope_type": "linear", "factor": 2.0})",
      R"({"type": "dynamic", "factor": 4.0})",
      R"({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
          "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 1.2})",
      R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192})",
  };
  for (const char* scaling : cases) {
    nlohmann::json j = nlohmann::json::parse(k2B4T);
    j["rope_scaling"] = nlohmann::json::parse(scaling);
    auto c = ParseModelConfig(j.dump(), "c.json");
    ASSERT_TRUE(c.ok()) << scaling << ": " << c.status();
    ASSERT_TRUE(c->rope_scaling.has_value()) << scaling;
    auto again = ParseModelConfig(ModelConfigToJson(*c), "again.json");
    ASSERT_TRUE(again.ok()) << again.status();
    ASSERT_TRUE(again->rope_scaling.has_value());
    EXPECT_EQ(RopeScalingToJson(*again->rope_scaling), RopeScalingToJson(*c->rope_scaling));
    // The scaled frequencies differ from the plain ones.
    EXPECT_NE(
        ModelRopeFrequencies(*c).inv_freq,
        ComputeRopeFrequencies(c->head_dim, c->rope_theta, c->max_position_embeddings, {}).inv_freq)
        << scaling;
  }
}

TEST(ModelConfig, DefaultRopeTypeAndTransformers5RopeParameters) {
  nlohmann::json j = nlohmann::json::parse(k2B4T);
  j["rope_scaling"] = {{"rope_type", "default"}};
  auto c = ParseModelConfig(j.dump(), "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->rope_scaling.has_value());
  // transformers 5 writes rope_theta inside rope_parameters.
  j = nlohmann::json::parse(k2B4T);
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 10000.0}};
  c = ParseModelConfig(j.dump(), "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 10000.0);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->type, RopeScaling::Type::kLinear);
}

TEST(RopeFrequencies, LinearDividesAndYarnKeepsTheFastDimensions) {
  const RopeFrequencies plain = ComputeRopeFrequencies(128, 10000.0, 4096, {});
  RopeScaling linear;
  linear.factor = 4;
  const RopeFrequencies lin = ComputeRopeFrequencies(128, 10000.0, 4096, linear);
  for (size_t i = 0; i < plain.inv_freq.size(); ++i) {
    EXPECT_EQ(lin.inv_freq[i], plain.inv_freq[i] / 4.0f);
  }
  RopeScaling yarn;
  yarn.type = RopeScaling::Type::kYarn;
  yarn.factor = 4;
  const RopeFrequencies y = ComputeRopeFrequencies(128, 10000.0, 4096, yarn);
  // High-frequency dimensions extrapolate (unchanged), the slowest interpolate (divided by 4);
  // the attention factor is 0.1 ln 4 + 1.
  EXPECT_EQ(y.inv_freq.front(), plain.inv_freq.front());
  EXPECT_EQ(y.inv_freq.back(), plain.inv_freq.back() / 4.0f);
  EXPECT_FLOAT_EQ(y.attention_scaling, static_cast<float>(0.1 * std::log(4.0) + 1.0));
  EXPECT_EQ(lin.attention_scaling, 1.0f);
}

TEST(ModelConfig, RejectsNonJsonAndNonObjects) {
  EXPECT_THAT(std::string(ParseModelConfig("{\"hidden_size\": ", "c.json").status().message()),
              HasSubstr("c.json: not valid JSON"));
  EXPECT_THAT(std::string(ParseModelConfig("[1, 2]", "c.json").status().message()),
              HasSubstr("must be a JSON object"));
}

TEST(ModelConfig, MissingFileNamesThePath) {
  auto c = LoadModelConfig("/nonexistent/model");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/model does not exist"));
}

}  // namespace
}  // namespace bitserve
