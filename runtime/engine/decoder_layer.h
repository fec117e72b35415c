// The decoder layer of BitNet b1.58 (DESIGN.md "Model and numerics") as every engine runs it: an
// attention block, then a feed-forward block that is dense or a mixture of experts. An engine
// implements the blocks (DecoderBlocks) and runs its layers through RunDecoderLayers, so that a
// new block type (the MoE FFN block on the GPU) is added in one place per backend: its method.
//
//   x += Attention(x):  RMSNorm_in -> ActQuant -> q, k, v -> RoPE -> [Hadamard rotation of q and
//                       k per head: EngineOptions::kv_rotation] -> paged attention (writes the
//                       layer's K/V) -> attn_sub_norm -> ActQuant -> o
//   x += Ffn(x):        RMSNorm_post, then the layer's block:
//                         dense: ActQuant -> gate, up -> relu(gate)^2 * up -> ffn_sub_norm ->
//                                ActQuant -> down                  (kernels/cpu/moe_ffn.h
//                                BitnetFfn)
//                         MoE:   router -> softmax top-k -> each chosen expert a dense block on
//                                ActQuant(n) -> weighted sum in top-k order (+ the shared expert
//                                and its sigmoid gate)             (kernels/cpu/moe_ffn.h
//                                MoeFeedForward)
// Under expert parallelism (EngineOptions::expert_exchange) the MoE block is the same computation
// with the expert products on the experts' owners: route, dispatch int8 rows, run, combine back
// (runtime/engine/cpu_expert_parallel.cc; kernels/cpu/moe_ffn.h has the pieces).
// What each block computes is fixed here; how is the backend's: the CUDA engine ends a block by
// adding its output into x and computing the next block's normed, quantized input in one kernel.
#pragma once

#include "absl/status/status.h"
#include "kernels/cpu/moe_ffn.h"
#include "runtime/checkpoint/model_config.h"

namespace bitserve {

enum class FfnBlock { kDense, kMoe };

// The feed-forward block of `layer` (every layer of an MoE config is MoE today; a model that
// mixes them would say so here).
FfnBlock LayerFfnBlock(const ModelConfig& config, int layer);

// What an MoE block needs of the config (both engines' MoE blocks).
MoeShape LayerMoeShape(const ModelConfig& config);

class DecoderBlocks {
 public:
  virtual ~DecoderBlocks() = default;
  virtual absl::Status Attention(int layer) = 0;
  virtual absl::Status DenseFfn(int layer) = 0;
  virtual absl::Status MoeFfn(int layer) = 0;
};

// Layers [begin, end) in order: each its attention block, then its feed-forward block.
absl::Status RunDecoderLayers(DecoderBlocks& blocks, const ModelConfig& config, int begin, int end);

}  // namespace bitserve
