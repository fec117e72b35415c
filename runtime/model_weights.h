// A BitNet b1.58 checkpoint in host memory, in the CPU engine's layout: ternary matrices decoded
// to int8 [out, in] with their weight_scale folded into one multiplier, norms in float32, the
// embedding (and an untied LM head) kept as bf16.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/ternary_matmul.h"
#include "runtime/model_config.h"
#include "runtime/safetensors_header.h"

namespace bitserve {

struct TernaryMatrix {
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  std::vector<int8_t> values;  // [rows, cols] in {-1, 0, +1}
  cpu::WeightScale scale;      // real weight = values * scale.multiplier()
};

// One BitNet feed-forward network: gate/up -> relu(gate)^2 * up -> sub_norm -> down.
struct FfnWeights {
  std::vector<float> sub_norm;  // ffn_sub_norm
  TernaryMatrix gate, up, down;
};

// A mixture-of-experts feed-forward block (docs/formats.md); empty in dense layers.
struct MoeWeights {
  std::vector<uint16_t> router;       // [num_experts, hidden] bf16 (mlp.gate.weight)
  std::vector<FfnWeights> experts;    // num_experts
  FfnWeights shared;                  // shared expert; empty matrices when there is none
  std::vector<uint16_t> shared_gate;  // [1, hidden] bf16 (mlp.shared_expert_gate.weight)
  bool has_shared() const { return !shared_gate.empty(); }
};

struct LayerWeights {
  std::vector<float> input_norm, attn_sub_norm, post_attention_norm, ffn_sub_norm;
  TernaryMatrix q, k, v, o, gate, up, down;  // gate/up/down and ffn_sub_norm: dense layers only
  MoeWeights moe;                            // MoE layers only (config.is_moe())
};

struct ModelWeights {
  ModelConfig config;
  std::vector<uint16_t> embedding;  // [vocab, hidden] bf16
  std::vector<uint16_t> lm_head;    // [vocab, hidden] bf16; empty when tied to the embedding
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;

  const uint16_t* lm_head_data() const { return lm_head.empty() ? embedding.data() : lm_head.data(); }
};

// What a checkpoint with this config holds, in file order: names, dtypes and shapes as
// transformers' BitNetForCausalLM saves them (ternary weights packed as U8 [out/4, in]); for MoE
// configs the feed-forward tensors of docs/formats.md (kRouter: bf16 router and shared-expert gate).
enum class TensorRole { kEmbedding, kLmHead, kNorm, kTernary, kWeightScale, kRouter };
struct TensorLayout {
  std::string name;
  TensorRole role;
  DType dtype;
  std::vector<int64_t> shape;
};
std::vector<TensorLayout> CheckpointLayout(const ModelConfig& config);

// Reads DIR/config.json and DIR's safetensors (single or sharded), checks that the tensors are
// exactly those of CheckpointLayout (names, dtypes, shapes; norms and scales may be BF16, F16 or
// F32), and decodes them. Errors name the file and the tensor.
// Only layers [layer_begin, layer_end) are decoded (a pipeline stage; -1: to the last); the
// others stay empty, though the whole file is still checked.
absl::StatusOr<ModelWeights> LoadModelWeights(const std::filesystem::path& dir, int layer_begin = 0,
                                              int layer_end = -1);

// Only layers [layer_begin, layer_end) (checked as LoadModelWeights checks the whole checkpoint),
// decoded on every CPU thread: a GPU engine streams a 70B model to the device a few layers at a
// time so that host memory holds a few layers, not the model's int8 values (70 GB).
absl::StatusOr<std::vector<LayerWeights>> LoadLayerWeights(const std::filesystem::path& dir, int layer_begin,
                                                           int layer_end);

}  // namespace bitserve
