// A BitNet checkpoint in device memory, in the layouts of kernels/cuda/: each layer's q, k, v
// fused into one ternary matrix [q; k; v] and gate, up into [gate; up] (the product yields their
// exact int32 sums; each part's own weight scale is applied by the epilogue that follows,
// qkv_rope.cuh and gated_ffn.cuh), o and down alone with their scale in the matrix
// (ternary_layout.h); norms as float32; embedding and LM head as bf16 (one buffer when tied). An
// MoE layer holds its router, experts and shared expert in kernels/cuda/moe/moe_ffn.cuh's layout
// instead of gate_up / down.
// A pipeline stage holds only its layers, the embedding on the first stage, the final norm and
// LM head on the last (the embedding there too when the LM head is tied to it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/moe/moe_ffn.cuh"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"
#include "runtime/checkpoint/model_weights.h"
#include "runtime/checkpoint/pipeline_stage.h"

namespace bitserve {

struct CudaLayerWeights {
  cuda::DeviceTernaryMatrix qkv, o, gate_up, down;  // gate_up, down: dense layers
  std::optional<cuda::DeviceMoeWeights> moe;        // MoE layers: router, experts, shared expert
  cuda::TernaryOutputScale q_scale, k_scale, v_scale, gate_scale, up_scale;
  cuda::DeviceBuffer<float> input_norm, attn_sub_norm, post_attention_norm, ffn_sub_norm;
};

struct CudaModelWeights {
  ModelConfig config;
  PipelineStage stage;  // layer_end resolved
  std::vector<CudaLayerWeights>
      layers;  // the stage's layers: layers[i] is layer stage.layer_begin + i
  cuda::DeviceBuffer<uint16_t> embedding;  // [vocab, hidden] bf16; empty when the stage needs none
  cuda::DeviceBuffer<uint16_t> lm_head;    // empty when tied
  cuda::DeviceBuffer<float> final_norm;
  int64_t ternary_bytes = 0, norm_bytes = 0;
  int64_t expert_bytes = 0;  // the routed experts' share of ternary_bytes

  const uint16_t* lm_head_data() const {
    return lm_head.size() > 0 ? lm_head.get() : embedding.get();
  }
};

// Reads, repacks and uploads what `stage` holds of the checkpoint in `dir` (layers a few at a
// time: host memory stays near a few layers' worth, not the model's). `expert_ids` (an
// expert-parallel rank's, ascending): only these routed experts, in this order; empty: all.
absl::StatusOr<CudaModelWeights> LoadCudaModelWeights(const std::filesystem::path& dir,
                                                      const PipelineStage& stage,
                                                      std::span<const int32_t> expert_ids = {});

// Random weights of `config`'s shapes for `stage`, made on the device (--load-format dummy): the
// statistics of `make-model`'s synthetic checkpoints (ternary codes 28% / 44% / 28%, scales that
// keep unit-RMS inputs near unit RMS, norms near 1), no file read. `held_experts` > 0: that many
// routed experts per MoE layer (an expert-parallel rank's share).
absl::StatusOr<CudaModelWeights> MakeDummyCudaModelWeights(const ModelConfig& config,
                                                           const PipelineStage& stage,
                                                           uint64_t seed, int held_experts = 0);

}  // namespace bitserve
