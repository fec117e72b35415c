// RoPE scaling (config.json's `rope_scaling`, or `rope_parameters` as newer transformers write it):
// the inverse frequencies and the cos/sin multiplier that transformers' ROPE_INIT_FUNCTIONS compute
// for the types "default", "linear", "dynamic", "yarn" and "llama3", in float32 as torch does.
//
// "dynamic" (NTK-aware) scales the base for a sequence length; transformers recomputes it from the
// longest position of each forward pass, which a server with a paged KV cache cannot (keys cached
// under one base would be read under another). Like vLLM, bitserve fixes that length at
// max_position_embeddings × factor: the same numbers as transformers at that length, and unscaled
// frequencies' neighbours below it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace bitserve {

struct RopeScaling {
  enum class Type { kLinear, kDynamic, kYarn, kLlama3 };
  Type type = Type::kLinear;
  double factor = 1;
  int original_max_position_embeddings = 0;  // 0: absent (yarn then uses max_position_embeddings)
  // llama3
  double low_freq_factor = 1, high_freq_factor = 4;
  // yarn (absent: transformers' defaults)
  std::optional<double> attention_factor, mscale, mscale_all_dim;
  double beta_fast = 32, beta_slow = 1;
  bool truncate = true;
};

const char* RopeScalingTypeName(RopeScaling::Type type);

// `value` is config.json's rope_scaling object (or rope_parameters); nullopt for null, {} or the
// "default" type. Errors name the field, e.g. `rope_scaling.factor must be >= 1`.
absl::StatusOr<std::optional<RopeScaling>> ParseRopeScaling(const nlohmann::json& value,
                                                            const std::string& field);
nlohmann::json RopeScalingToJson(const RopeScaling& scaling);

struct RopeFrequencies {
  std::vector<float> inv_freq;  // [head_dim / 2]
  float attention_scaling = 1;  // multiplies cos and sin (yarn), so q·k by its square
};

// What the engines rotate with. `max_position_embeddings`: config.json's.
RopeFrequencies ComputeRopeFrequencies(int head_dim, double rope_theta, int max_position_embeddings,
                                       const std::optional<RopeScaling>& scaling);

}  // namespace bitserve
