// The mixture-of-experts feed-forward block of bitserve's BitNet MoE format (docs/formats.md),
// the CPU reference. For each token row n (the post_attention_layernorm output, float32):
//   p        = softmax(n · Router^T)                  bf16 router [E, hidden], float32 math
//   top-k    = the k largest p (ties: lower expert index first), in descending order
//   w_j      = p_j / sum(top-k p) if norm_topk_prob (Mixtral; Qwen-MoE's norm_topk_prob=true),
//              else p_j (Qwen-MoE's default false)
//   expert_e = down_e(ActQuant(ffn_sub_norm_e(relu(gate_e(nq))^2 * up_e(nq))))  with nq =
//   ActQuant(n),
//              one quantization of n shared by every expert (it is per token, so identical)
//   out      = sum over j in top-k order of w_j * expert_j  (+ sigmoid(n · G) * shared(n),
//   Qwen-MoE)
// The caller adds `out` to the residual stream.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/checkpoint/model_config.h"
#include "runtime/checkpoint/model_weights.h"

namespace bitserve {

// Routing alone: logits [m, num_experts] -> experts/weights [m, k] (descending probability).
void RouteTopK(const float* logits, int64_t m, int num_experts, int k, bool norm_topk_prob,
               int32_t* experts, float* weights);

// Buffers reused between calls (optional).
struct MoeScratch {
  std::vector<float> logits, weights, expert_out, g, u, y, gate;
  std::vector<int32_t> experts, rows;
  std::vector<int8_t> nq, xq, dq;
  std::vector<float> n_scales, x_scales, d_scales;
};

// n: [m, hidden]; out: [m, hidden] (overwritten, must not alias n). `config` must be an MoE config
// that `w` was loaded for.
void MoeFeedForward(const MoeWeights& w, const ModelConfig& config, const float* n, int64_t m,
                    float* out, MoeScratch* scratch = nullptr);

}  // namespace bitserve
