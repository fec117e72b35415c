// The model hyper-parameters of a BitNet b1.58 checkpoint (Hugging Face `BitNetForCausalLM`
// config.json), validated once here; code behind this boundary trusts them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/checkpoint/rope_scaling.h"

namespace bitserve {

// How a packed ternary matrix T and its stored `weight_scale` s give the real weight:
// autobitlinear: W = T * s;  bitlinear: W = T / s (transformers' BitLinear divides).
enum class LinearClass { kAutoBitLinear, kBitLinear };

absl::string_view LinearClassName(LinearClass linear_class);

struct ModelConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // config.json's head_dim, else hidden_size / num_attention_heads
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rope_theta = 500000.0;
  std::optional<RopeScaling> rope_scaling;  // none: plain RoPE
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = true;
  int bos_token_id = -1;           // -1: none
  std::vector<int> eos_token_ids;  // config.json's eos_token_id (a number or a list)
  LinearClass linear_class = LinearClass::kAutoBitLinear;

  // Mixture of experts (model_type "bitnet_moe", docs/formats.md); num_experts == 0: dense.
  // Every layer's feed-forward block is then a router over num_experts BitNet FFN experts of
  // moe_intermediate_size, num_experts_per_tok of them per token, plus an optional shared expert.
  int num_experts = 0;  // config.json: num_experts or num_local_experts
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;            // each expert's FFN width
  bool norm_topk_prob = true;               // renormalize the top-k router probabilities
  int shared_expert_intermediate_size = 0;  // 0: no shared expert

  bool is_moe() const { return num_experts > 0; }
  // Positions the model serves by default: max_position_embeddings, extended by RoPE scaling as
  // vLLM derives it (linear and dynamic: × factor; yarn: original_max_position_embeddings (or
  // max_position_embeddings) × factor; llama3 configs already give the extended length).
  int64_t context_length() const;
  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
  int group_size() const { return num_attention_heads / num_key_value_heads; }

  // Checks every invariant the engines rely on; the message names the field.
  absl::Status Validate() const;
};

// The frequencies and cos/sin multiplier the engines rotate q and k with (rope_theta and
// rope_scaling).
inline RopeFrequencies ModelRopeFrequencies(const ModelConfig& c) {
  return ComputeRopeFrequencies(c.head_dim, c.rope_theta, c.max_position_embeddings,
                                c.rope_scaling);
}

// Parses config.json text. `source` (usually the file path) appears in every error message.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);

// Reads DIR/config.json (or the file itself when given a file).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& dir_or_file);

// The config.json that transformers' BitNetForCausalLM loads, for checkpoints bitserve writes.
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace bitserve
