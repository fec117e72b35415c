// The MoE checkpoint format (docs/formats.md): config fields, tensor inventory, clear errors.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/bf16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/checkpoint/model_weights.h"
#include "runtime/checkpoint/safetensors_writer.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kMoeConfig[] = R"({
  "architectures": ["BitNetMoeForCausalLM"], "model_type": "bitnet_moe", "hidden_act": "relu2",
  "hidden_size": 32, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 50, "max_position_embeddings": 64,
  "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "bos_token_id": 0,
  "eos_token_id": [1], "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
  "norm_topk_prob": true, "shared_expert_intermediate_size": 8,
  "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                          "quantization_mode": "offline"}
})";

std::string Patched(const std::string& from, const std::string& to) {
  std::string s = kMoeConfig;
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

TEST(MoeConfig, ParsesQwenNames) {
  auto c = ParseModelConfig(kMoeConfig, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->is_moe());
  EXPECT_EQ(c->num_experts, 4);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_EQ(c->moe_intermediate_size, 16);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->shared_expert_intermediate_size, 8);
  auto again = ParseModelConfig(ModelConfigToJson(*c), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->num_experts, 4);
  EXPECT_EQ(again->shared_expert_intermediate_size, 8);
}

TEST(MoeConfig, AcceptsMixtralName) {
  auto c =
      ParseModelConfig(Patched("\"num_experts\": 4", "\"num_local_experts\": 4"), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_experts, 4);
}

TEST(MoeConfig, ErrorsNameTheField) {
  const std::pair<std::string, std::string> cases[][1] = {
      {{"\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 5"}},
      {{"\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 0"}},
      {{"\"num_experts\": 4,", ""}},
      {{"\"moe_intermediate_size\": 16", "\"moe_intermediate_size\": 18"}},
      {{"\"num_experts\": 4", "\"num_experts\": 4, \"num_local_experts\": 8"}},
      {{"\"model_type\": \"bitnet_moe\"", "\"model_type\": \"bitnet\""}},
      {{"\"BitNetMoeForCausalLM\"", "\"BitNetForCausalLM\""}},
  };
  const char* expected[] = {"num_experts_per_tok",   "num_experts_per_tok", "num_experts",
                            "moe_intermediate_size", "num_local_experts",   "model_type",
                            "architectures"};
  for (size_t i = 0; i < std::size(cases); ++i) {
    auto c = ParseModelConfig(Patched(cases[i][0].first, cases[i][0].second), "config.json");
    ASSERT_FALSE(c.ok()) << i;
    EXPECT_THAT(c.status().message(), HasSubstr(expected[i])) << c.status();
    EXPECT_THAT(c.status().message(), HasSubstr("config.json")) << c.status();
  }
  auto c = ParseModelConfig(Patched("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 5"),
                            "config.json");
  EXPECT_THAT(c.status().message(), HasSubstr("must be in [1, num_experts = 4], got 5"));
}

TEST(MoeConfig, LayoutHasRouterExpertsAndSharedExpert) {
  auto c = ParseModelConfig(kMoeConfig, "config.json");
  ASSERT_TRUE(c.ok());
  std::map<std::string, TensorLayout> by_name;
  for (TensorLayout& t : CheckpointLayout(*c)) by_name.emplace(t.name, t);
  ASSERT_TRUE(by_name.count("model.layers.1.mlp.gate.weight"));
  EXPECT_EQ(by_name["model.layers.1.mlp.gate.weight"].shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(by_name["model.layers.1.mlp.gate.weight"].dtype, DType::kBF16);
  EXPECT_EQ(by_name["model.layers.0.mlp.experts.3.up_proj.weight"].shape,
            (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(by_name["model.layers.0.mlp.experts.3.down_proj.weight"].shape,
            (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(by_name["model.layers.0.mlp.experts.0.ffn_sub_norm.weight"].shape,
            (std::vector<int64_t>{16}));
  EXPECT_EQ(by_name["model.layers.0.mlp.shared_expert.gate_proj.weight"].shape,
            (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(by_name["model.layers.0.mlp.shared_expert_gate.weight"].shape,
            (std::vector<int64_t>{1, 32}));
  EXPECT_FALSE(by_name.count("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_FALSE(by_name.count("model.layers.0.mlp.ffn_sub_norm.weight"));
}

class MoeCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bitserve_moe_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes config.json and every tensor of its layout except `skip`, plus `extra` if given.
  void Write(const std::string& skip = "", const std::string& extra = "") {
    std::ofstream(dir_ / "config.json") << kMoeConfig;
    auto c = ParseModelConfig(kMoeConfig, "config.json");
    ASSERT_TRUE(c.ok());
    std::vector<TensorSpec> specs;
    std::vector<TensorLayout> layout = CheckpointLayout(*c);
    if (!extra.empty()) layout.push_back({extra, TensorRole::kNorm, DType::kBF16, {16}});
    for (const TensorLayout& t : layout) {
      if (t.name == skip) continue;
      TensorSpec spec{t.name, t.dtype, t.shape, nullptr};
      const bool ternary = t.role == TensorRole::kTernary;
      spec.fill = [ternary](std::span<uint8_t> out) {
        if (ternary) {
          std::memset(out.data(), 0x66, out.size());  // codes 2,1,2,1: +1, 0, +1, 0
        } else {
          for (size_t i = 0; i + 1 < out.size(); i += 2) {
            const uint16_t one = FloatToBf16(0.5f);
            std::memcpy(out.data() + i, &one, 2);
          }
        }
        return absl::OkStatus();
      };
      specs.push_back(std::move(spec));
    }
    ASSERT_TRUE(WriteSafetensors(dir_, std::move(specs)).ok());
  }

  fs::path dir_;
};

TEST_F(MoeCheckpoint, Loads) {
  Write();
  auto w = LoadModelWeights(dir_);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->layers.size(), 2u);
  const MoeWeights& moe = w->layers[1].moe;
  ASSERT_EQ(moe.experts.size(), 4u);
  EXPECT_EQ(moe.router.size(), 4u * 32);
  EXPECT_EQ(moe.experts[2].gate.rows, 16);
  EXPECT_EQ(moe.experts[2].down.rows, 32);
  EXPECT_EQ(moe.experts[2].sub_norm.size(), 16u);
  EXPECT_TRUE(moe.has_shared());
  EXPECT_EQ(moe.shared.up.rows, 8);
  EXPECT_TRUE(w->layers[0].ffn.gate.values.empty());
}

TEST_F(MoeCheckpoint, MissingExpertTensorIsNamed) {
  Write("model.layers.1.mlp.experts.2.down_proj.weight_scale");
  auto w = LoadModelWeights(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(),
              HasSubstr("model.layers.1.mlp.experts.2.down_proj.weight_scale"));
  EXPECT_THAT(w.status().message(), HasSubstr("num_experts"));
}

TEST_F(MoeCheckpoint, MissingRouterIsNamed) {
  Write("model.layers.0.mlp.gate.weight");
  auto w = LoadModelWeights(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("model.layers.0.mlp.gate.weight"));
  EXPECT_THAT(w.status().message(), HasSubstr("router"));
}

TEST_F(MoeCheckpoint, ExtraExpertIsRefused) {
  Write("", "model.layers.0.mlp.experts.4.ffn_sub_norm.weight");
  auto w = LoadModelWeights(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("model.layers.0.mlp.experts.4.ffn_sub_norm.weight"));
  EXPECT_THAT(w.status().message(), HasSubstr("unexpected tensor"));
}

}  // namespace
}  // namespace bitserve
