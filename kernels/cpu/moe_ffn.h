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
#include <functional>
#include <vector>

#include "kernels/cpu/ternary_matmul.h"

namespace bitserve {

// One BitNet feed-forward network: gate/up -> relu(gate)^2 * up -> sub_norm -> down.
struct FfnWeights {
  std::vector<float> sub_norm;  // ffn_sub_norm
  TernaryMatrix gate, up, down;
};

// A mixture-of-experts feed-forward block (docs/formats.md); empty in dense layers.
struct MoeWeights {
  std::vector<uint16_t> router;  // [num_experts, hidden] bf16 (mlp.gate.weight)
  // num_experts; under expert parallelism only the rank's own are loaded, the others empty.
  std::vector<FfnWeights> experts;
  FfnWeights shared;                  // shared expert; empty matrices when there is none
  std::vector<uint16_t> shared_gate;  // [1, hidden] bf16 (mlp.shared_expert_gate.weight)
  bool has_shared() const { return !shared_gate.empty(); }
  bool holds(int expert) const { return !experts[expert].gate.values.empty(); }
};

// What the MoE block needs of the model's config.
struct MoeShape {
  int64_t hidden = 0;
  int num_experts = 0;
  int top_k = 0;  // num_experts_per_tok
  bool norm_topk_prob = false;
  float eps = 1e-5f;  // rms_norm_eps of the experts' sub-norms
};

// Buffers reused between calls (optional).
struct MoeScratch {
  std::vector<float> logits, weights, expert_out, g, u, y, gate;
  std::vector<int32_t> experts, rows;
  std::vector<int8_t> dispatch_q;
  std::vector<float> dispatch_scales;
  std::vector<int8_t> nq, xq, dq;
  std::vector<float> n_scales, x_scales, d_scales;
};

namespace cpu {

// One BitNet FFN on rows whose input is already quantized (xq [rows, hidden], x_scales [rows]):
// y [rows, hidden] = down(ActQuant(sub_norm(relu(gate(xq))^2 * up(xq)))). The dense layers' FFN
// block and every expert. `down_in`, when set, sees the float input of the down product.
void BitnetFfn(const FfnWeights& f, const int8_t* xq, const float* x_scales, int64_t rows,
               int64_t hidden, float eps, MoeScratch& scratch, float* y,
               const std::function<void(const float* x, int64_t rows, int64_t dim)>& down_in = {});

// Routing alone: logits [m, num_experts] -> experts/weights [m, k] (descending probability).
void RouteTopK(const float* logits, int64_t m, int num_experts, int k, bool norm_topk_prob,
               int32_t* experts, float* weights);

// The MoE block in the pieces that expert parallelism (runtime/engine/cpu_engine.cc) runs on
// different ranks; MoeFeedForward is their composition on one. Slot i = row * k + j is row's j-th
// choice.
//
// Router and top-k: n [m, hidden] -> experts, weights [m * k] (scratch.experts, scratch.weights).
void RouteTokens(const MoeWeights& w, const MoeShape& shape, const float* n, int64_t m,
                 MoeScratch& scratch);
// Runs each given row through its expert: xq [rows, hidden] int8 with x_scales [rows], row r
// through expert expert_ids[r] (which `w` must hold) -> y [rows, hidden]. Each expert runs once
// over all of its rows; every product is per row, so how rows are grouped never changes a result.
void RunExperts(const MoeWeights& w, const MoeShape& shape, const int8_t* xq, const float* x_scales,
                const int32_t* expert_ids, int64_t rows, float* y, MoeScratch& scratch);
// out [m, hidden] = sum over j in top-k order of weights[r * k + j] * expert_out[r * k + j],
// each product rounded before the add (as torch evaluates it).
void CombineExperts(const float* weights, const float* expert_out, int64_t m, int k, int64_t hidden,
                    float* out);
// out += sigmoid(n · G) * shared(nq), when `w` has a shared expert (Qwen-MoE).
void AddSharedExpert(const MoeWeights& w, const MoeShape& shape, const float* n, const int8_t* nq,
                     const float* n_scales, int64_t m, float* out, MoeScratch& scratch);

// n: [m, hidden]; out: [m, hidden] (overwritten, must not alias n). `w` holds shape.num_experts
// experts.
void MoeFeedForward(const MoeWeights& w, const MoeShape& shape, const float* n, int64_t m,
                    float* out, MoeScratch* scratch = nullptr);

}  // namespace cpu
}  // namespace bitserve
