// The attention block's input side after the fused q/k/v product: the float epilogue of each part
// of the [q; k; v] matrix (its own ternary_layout.h scale), then rotary position embedding (NeoX,
// rotate-half) on q and k at each token's position, writing q, k, v as separate float rows.
//
// Reference: cpu::TernaryMatmul's epilogue (ApplyTernaryOutputScale) and cpu::RopeNeox. The cos
// and sin of every (position, frequency) come from a table computed on the host with the same
// library calls as cpu::RopeNeox (RopeCosSinTable), and the rotation is the same four products and
// two sums without contraction, so q and k are bit-exact against the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {

// [2][max_positions][head_dim / 2]: cos, then sin, of float(position) * inv_freq[i] as
// cpu::RopeNeox computes them (inv_freq from cpu::RopeInverseFrequencies).
// Both multiplied by `attention_scaling` (YaRN's; 1 otherwise), as cpu::RopeNeox does.
std::vector<float> RopeCosSinTable(const std::vector<float>& inv_freq, int64_t max_positions,
                                   float attention_scaling = 1.0f);

struct QkvShape {
  int heads = 0, kv_heads = 0, head_dim = 0;  // head_dim even
  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
  int rows() const { return q_dim() + 2 * kv_dim(); }
};

// acc: [tokens, shape.rows()] int32 sums of the fused matrix (q rows, then k, then v); x_scales:
// [tokens]; positions: [tokens] device, each in [0, max_positions); cos_sin: the device copy of
// RopeCosSinTable. Writes q [tokens, q_dim], k and v [tokens, kv_dim].
absl::Status QkvEpilogueRope(const int32_t* acc, const float* x_scales, TernaryOutputScale q_scale,
                             TernaryOutputScale k_scale, TernaryOutputScale v_scale, int64_t tokens,
                             const QkvShape& shape, const int32_t* positions, const float* cos_sin,
                             int64_t max_positions, float* q, float* k, float* v,
                             cudaStream_t stream);

// QkvEpilogueRope and WritePagedKv in one kernel for a bf16 cache: q as above for the batch's
// num_tokens rows; each token's k (after RoPE) and v go straight into its cache row, rounded to
// bf16 as WritePagedKv does (the same bytes), with no float k and v in between. Tokens without a
// row (past device_num_tokens: a decode bucket's padding) write q only. The cache must be bf16
// with shape.kv_heads heads of shape.head_dim (InvalidArgument otherwise).
absl::Status QkvEpilogueRopeWriteBf16Kv(const int32_t* acc, const float* x_scales,
                                        TernaryOutputScale q_scale, TernaryOutputScale k_scale,
                                        TernaryOutputScale v_scale, const QkvShape& shape,
                                        const int32_t* positions, const float* cos_sin,
                                        int64_t max_positions, float* q,
                                        const AttentionBatch& batch, const PagedKvLayer& cache,
                                        cudaStream_t stream);

}  // namespace bitserve::cuda
