// A BitNet b1.58 checkpoint in host memory, in the CPU engine's layout: ternary matrices decoded
// to int8 [out, in] with their weight_scale folded into one multiplier, norms in float32, the
// embedding (and an untied LM head) kept as bf16.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/moe_ffn.h"
#include "kernels/cpu/ternary_matmul.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/checkpoint/pipeline_stage.h"
#include "runtime/checkpoint/safetensors_header.h"

namespace bitserve {

// The weights of one decoder layer, block by block (runtime/engine/decoder_layer.h): the attention
// block's, then those of its feed-forward block, dense or a mixture of experts
// (kernels/cpu/moe_ffn.h holds FfnWeights and MoeWeights, the types of the CPU reference ops).
struct LayerWeights {
  std::vector<float> input_norm, attn_sub_norm, post_attention_norm;
  TernaryMatrix q, k, v, o;
  FfnWeights ffn;  // dense layers only
  MoeWeights moe;  // MoE layers only (config.is_moe())
};

struct ModelWeights {
  ModelConfig config;
  std::vector<uint16_t> embedding;  // [vocab, hidden] bf16
  std::vector<uint16_t> lm_head;    // [vocab, hidden] bf16; empty when tied to the embedding
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;

  const uint16_t* lm_head_data() const {
    return lm_head.empty() ? embedding.data() : lm_head.data();
  }
};

// What a checkpoint with this config holds, in file order: names, dtypes and shapes as
// transformers' BitNetForCausalLM saves them (ternary weights packed as U8 [out/4, in]); for MoE
// configs the feed-forward tensors of docs/formats.md (kRouter: bf16 router and shared-expert
// gate).
enum class TensorRole { kEmbedding, kLmHead, kNorm, kTernary, kWeightScale, kRouter };
struct TensorLayout {
  std::string name;
  TensorRole role;
  DType dtype;
  std::vector<int64_t> shape;
};
std::vector<TensorLayout> CheckpointLayout(const ModelConfig& config);

// A checkpoint opened and checked once: DIR/config.json, and DIR's safetensors (single or sharded)
// holding exactly the tensors of CheckpointLayout (names, dtypes, shapes; norms and scales may be
// BF16, F16 or F32). Parts are decoded on demand; errors name the file and the tensor.
class CheckpointReader {
 public:
  static absl::StatusOr<CheckpointReader> Open(const std::filesystem::path& dir);
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;
  ~CheckpointReader();

  const ModelConfig& config() const;
  // The weights outside the layers that `stage` uses: the embedding on the first stage, the final
  // norm and LM head on the last (the embedding there too when the LM head is tied to it). What a
  // stage does not use stays empty, and `layers` has num_hidden_layers empty entries.
  absl::StatusOr<ModelWeights> StageEnds(const PipelineStage& stage) const;
  // Layers [begin, end), decoded on every CPU thread (a GPU engine streams a 70B model to the
  // device a few layers at a time, so that the host never holds the model's int8 values, 70 GB).
  // MoE layers load the routed experts `expert_ids` (empty: all of them; expert parallelism gives
  // each rank its own, scheduler/expert_placement.h); the others stay empty (MoeWeights::holds).
  absl::StatusOr<std::vector<LayerWeights>> Layers(int begin, int end,
                                                   std::span<const int32_t> expert_ids = {}) const;

 private:
  struct State;
  explicit CheckpointReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// What `stage` (default: the whole model) holds of the checkpoint in `dir`: StageEnds and its
// layers, with the routed experts `expert_ids` (empty: all); the other layers stay empty.
absl::StatusOr<ModelWeights> LoadModelWeights(const std::filesystem::path& dir,
                                              const PipelineStage& stage = {},
                                              std::span<const int32_t> expert_ids = {});

}  // namespace bitserve
