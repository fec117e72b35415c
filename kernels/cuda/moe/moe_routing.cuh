// The routing half of a mixture-of-experts FFN block on the GPU (the block: moe_ffn.cuh; the CPU
// reference: kernels/cpu/moe_ffn.h): the bf16 router product, softmax + top-k, the grouping of the
// (token, expert) pairs by expert into the work list of a grouped product
// (ternary/ternary_grouped_gemv.cuh), and the weighted combine of the experts' outputs.
// Numerics against the CPU: the router's float sums and the softmax's exp may differ in the last
// bits (float tolerance); the selection rule (descending probability, ties to the lower expert
// index), the probability sum (in expert order), the top-k sum (in top-k order) and the combine
// (each product rounded, then added in top-k order) are the CPU's operations in the CPU's order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/ternary/ternary_grouped_gemv.cuh"

namespace bitserve::cuda {

// y [m, n] = x [m, k] float32 times w [n, k] bf16, float32 sums (the router; its last row may be
// the shared expert's gate). k: a multiple of 4; x and w 8-byte aligned.
absl::Status Bf16RowProducts(const float* x, int64_t m, const uint16_t* w, int n, int64_t k,
                             float* y, cudaStream_t stream);

// The router for more than a few tokens: y [m, n] = x [m, k] times w [n, k], both float32 (the
// bf16 router widened once at load: exact), by cuBLAS's fp32 SGEMM with the default math mode
// (no TF32: every product is exact in float, only the order of the float sums differs from
// Bf16RowProducts). Bf16RowProducts reads x once per output row: ~23 us a layer at 256 tokens
// and 1.5 ms at 8,192 on the H100; SGEMM tiles it. RouteTokens (moe_ffn.cuh) takes it from
// kRouterSgemmMinTokens tokens; it runs inside CUDA graph capture (its workspace is its own, set
// once, as the LM head's cuBLAS call in the decode graphs).
inline constexpr int64_t kRouterSgemmMinTokens = 32;
class RouterSgemm {
 public:
  static absl::StatusOr<std::unique_ptr<RouterSgemm>> Create();
  ~RouterSgemm();
  absl::Status Run(const float* x, int64_t m, const float* w, int n, int64_t k, float* y,
                   cudaStream_t stream);

 private:
  RouterSgemm() = default;
  void* handle_ = nullptr;  // cublasHandle_t, kept out of this header
  DeviceBuffer<uint8_t> workspace_;
};

// For each token t: p = softmax(logits[t, 0 .. num_experts)), the top_k largest (descending, ties
// to the lower index) into experts [m, top_k] and their weights (p, or p / sum of the top-k p when
// norm_topk_prob) into weights [m, top_k]. logit_stride >= num_experts; num_experts <= 1024.
absl::Status SoftmaxTopK(const float* logits, int64_t logit_stride, int64_t m, int num_experts,
                         int top_k, bool norm_topk_prob, int32_t* experts, float* weights,
                         cudaStream_t stream);

// The pairs (token t, slot j) of experts [m, top_k] grouped by expert: grouped rows
// [expert_rows[e], expert_rows[e + 1]) are expert e's, in no particular order within an expert
// (each row's result is independent of the others). Device outputs:
struct ExpertGrouping {
  int32_t* expert_rows = nullptr;  // [num_experts + 1]
  int32_t* source_rows = nullptr;  // [m * top_k]: the token of each grouped row
  int32_t* row_expert = nullptr;   // [m * top_k]: the expert of each grouped row
  int32_t* pair_rows = nullptr;    // [m * top_k]: the grouped row of pair (t, j), at t * top_k + j
  GroupedProductItem* items = nullptr;  // [max_items]: runs of at most rows_per_item rows
  int32_t* num_items = nullptr;         // [1]
};
absl::Status GroupByExpert(const int32_t* experts, int64_t m, int top_k, int num_experts,
                           int rows_per_item, int max_items, const ExpertGrouping& out,
                           cudaStream_t stream);

// One token (batch-1 decode): SoftmaxTopK and GroupByExpert of its top_k pairs in one launch,
// with the same outputs as the two (logits: [num_experts (+ more)] of the one token).
absl::Status SoftmaxTopKGroupOneToken(const float* logits, int num_experts, int top_k,
                                      bool norm_topk_prob, int32_t* experts, float* weights,
                                      int rows_per_item, int max_items, const ExpertGrouping& out,
                                      cudaStream_t stream);

// out [m, hidden] = sum over j in top-k order of weights[t, j] * y[pair_rows[t * top_k + j]], and
// then, when `shared` is not null, + sigmoid(shared_logits[t * logit_stride]) * shared[t].
// y: [grouped rows, hidden]; hidden a multiple of 4.
absl::Status CombineExperts(const float* y, const int32_t* pair_rows, const float* weights,
                            int64_t m, int top_k, int64_t hidden, const float* shared_logits,
                            int64_t logit_stride, const float* shared, float* out,
                            cudaStream_t stream);

}  // namespace bitserve::cuda
