// The mixture-of-experts feed-forward block on the GPU (docs/formats.md "Mixture of experts"; CPU
// reference: kernels/cpu/moe_ffn.h cpu::MoeFeedForward, whose steps this follows):
//   router logits (bf16 router, float sums; the shared expert's gate is one more router row)
//   -> softmax + top-k -> the (token, expert) pairs grouped by expert (moe_routing.cuh)
//   -> one grouped [gate; up] product over all active experts (int32 sums, exact)
//   -> per row: its expert's gate/up epilogue, relu(gate)^2 * up, its ffn_sub_norm, int8 quantize
//   -> one grouped down product (float, the expert's scale) -> weighted combine in top-k order
//   (+ sigmoid(gate) * the shared expert, a dense BitNet FFN on the same quantized input).
// Every launch is sized by bounds (tokens, top_k), not by the routing, so the block runs inside
// captured CUDA graphs. The integer parts equal the CPU's exactly; the router, softmax and the
// float64 sum-of-squares order of the norms are within float tolerance.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/cpu/moe_ffn.h"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/moe/moe_routing.cuh"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_grouped_gemv.cuh"

namespace bitserve::cuda {

// What the block reads (non-owning device pointers).
struct MoeFfnWeightsView {
  const uint16_t* router = nullptr;   // [num_experts (+1 with a shared expert), hidden] bf16
  const float* router_f32 = nullptr;  // the same widened to float32 (RouterSgemm's input)
  // The routed experts this block holds (all, or an expert-parallel rank's own, in the order of
  // its expert list): per expert [2 * inter, hidden], [gate; up], int32 sums.
  GroupedTernaryWeights gate_up;
  const TernaryOutputScale* gate_scales = nullptr;  // [experts held]
  const TernaryOutputScale* up_scales = nullptr;    // [experts held]
  const float* sub_norms = nullptr;                 // [experts held, inter]
  GroupedTernaryWeights down;                       // per expert [hidden, inter], float output
  int64_t inter = 0;
  // The shared expert; shared_inter == 0: none.
  TernaryMatrixView shared_gate_up, shared_down;
  TernaryOutputScale shared_gate_scale, shared_up_scale;
  const float* shared_sub_norm = nullptr;
  int64_t shared_inter = 0;
};

// Owns one layer's MoE weights on the device, in the layouts above.
class DeviceMoeWeights {
 public:
  // Packs and uploads `w` (num_experts experts of the same shape); frees w's int8 values as it
  // goes (host memory stays near one layer). `experts` (expert parallelism): only these routed
  // experts, the view's expert i being experts[i] (the router stays whole); empty: all.
  static absl::StatusOr<DeviceMoeWeights> Upload(MoeWeights& w, const MoeShape& shape,
                                                 std::span<const int32_t> experts = {});
  // Random weights of these shapes made on the device (dummy-weight loads): ternary codes as
  // `make-model`'s, scales that keep unit-RMS inputs near unit RMS, norms near 1. `held`: how
  // many routed experts this rank holds (0: all of shape.num_experts).
  static absl::StatusOr<DeviceMoeWeights> Random(const MoeShape& shape, int64_t inter,
                                                 int64_t shared_inter, uint64_t seed, int held = 0);
  const MoeFfnWeightsView& view() const { return view_; }
  DeviceMoeWeights(DeviceMoeWeights&&) = default;
  DeviceMoeWeights& operator=(DeviceMoeWeights&&) = default;
  int64_t ternary_bytes() const { return ternary_bytes_; }
  // The routed experts' share of ternary_bytes (a decode step reads only those it routes to).
  int64_t expert_bytes() const { return 4 * (gate_up_.size() + down_.size()); }
  int64_t float_bytes() const { return float_bytes_; }

 private:
  DeviceMoeWeights() = default;
  static absl::Status WidenRouter(DeviceMoeWeights& d);  // router_f32_ from router_
  DeviceBuffer<uint16_t> router_;
  DeviceBuffer<float> router_f32_;
  DeviceBuffer<uint32_t> gate_up_, down_;
  DeviceBuffer<TernaryOutputScale> gate_scales_, up_scales_, down_scales_;
  DeviceBuffer<float> sub_norms_, shared_sub_norm_;
  DeviceTernaryMatrix shared_gate_up_, shared_down_;
  MoeFfnWeightsView view_;
  int64_t ternary_bytes_ = 0, float_bytes_ = 0;
};

// Scratch for up to max_tokens tokens (sized once; a run allocates nothing).
class MoeFfnScratch {
 public:
  static absl::StatusOr<MoeFfnScratch> Create(const MoeShape& shape, int64_t inter,
                                              int64_t shared_inter, int64_t max_tokens);
  int64_t bytes() const;
  int64_t max_tokens() const { return max_tokens_; }
  int64_t max_pairs() const { return max_pairs_; }

  // What the steps below leave here (device pointers), for the expert-parallel block.
  const int32_t* experts() const { return experts_.get(); }  // RouteTokens: [m, top_k]
  const float* weights() const { return weights_.get(); }    // RouteTokens: [m, top_k]
  const float* logits() const { return logits_.get(); }      // RouteTokens: [m, router rows]
  const float* y() const { return y_.get(); }                // ExpertProducts: grouped rows
  float* y() { return y_.get(); }
  const int32_t* pair_rows() const { return pair_rows_.get(); }      // ExpertProducts
  const int32_t* expert_rows() const { return expert_rows_.get(); }  // ExpertProducts: [E + 1]

 private:
  friend absl::Status RouteTokens(const MoeFfnWeightsView&, const MoeShape&, const float*, int64_t,
                                  MoeFfnScratch&, cudaStream_t);
  friend absl::Status ExpertProducts(const MoeFfnWeightsView&, float, const int32_t*, int,
                                     const Int8Activations&, MoeFfnScratch&, cudaStream_t);
  friend absl::Status GroupedExpertProducts(const MoeFfnWeightsView&, float, int64_t,
                                            const Int8Activations&, MoeFfnScratch&, cudaStream_t);
  friend absl::Status MoeFeedForward(const MoeFfnWeightsView&, const MoeShape&, const float*,
                                     const Int8Activations&, float*, MoeFfnScratch&, TernaryGemm*,
                                     cudaStream_t);
  friend absl::Status SharedExpertAndCombine(const MoeFfnWeightsView&, const MoeShape&,
                                             const Int8Activations&, const float*, const int32_t*,
                                             float*, MoeFfnScratch&, TernaryGemm*, cudaStream_t);
  // The router's logits of the m tokens of n into logits_ (rows of num_experts (+ 1)).
  absl::Status RouterLogits(const MoeFfnWeightsView& w, const MoeShape& shape, const float* n,
                            int64_t m, cudaStream_t stream);
  // The grouping outputs (GroupByExpert's) in this scratch.
  ExpertGrouping Grouping();
  int64_t max_tokens_ = 0, max_pairs_ = 0, max_items_ = 0;
  std::unique_ptr<RouterSgemm> router_sgemm_;  // the router above kRouterSgemmMinTokens tokens
  int num_experts_ = 0;
  DeviceBuffer<float> logits_, weights_, y_, shared_y_;
  DeviceBuffer<int32_t> experts_, expert_rows_, source_rows_, row_expert_, pair_rows_, num_items_;
  DeviceBuffer<GroupedProductItem> items_;
  DeviceBuffer<int32_t> acc_, shared_acc_;
  DeviceBuffer<int8_t> act_, shared_act_;
  DeviceBuffer<float> act_scales_, shared_act_scales_;
  DeviceBuffer<int32_t> act_sums_, shared_act_sums_;
};

// n: [m, hidden] float (the post-attention RMSNorm output), nq: its int8 quantization (m = nq.rows
// tokens); out: [m, hidden], the block's output (the caller adds it to the residual stream).
// gemm: the shared expert's dense products (may be null). RouteTokens, ExpertProducts and
// SharedExpertAndCombine in turn; at one token (batch-1 decode) the top-k and the grouping run as
// one launch (SoftmaxTopKGroupOneToken), then GroupedExpertProducts.
absl::Status MoeFeedForward(const MoeFfnWeightsView& w, const MoeShape& shape, const float* n,
                            const Int8Activations& nq, float* out, MoeFfnScratch& scratch,
                            TernaryGemm* gemm, cudaStream_t stream);

// The block's steps, which the expert-parallel block runs with the exchange between them:
// Router logits, softmax and top-k of the m tokens of n (scratch.experts(), weights(), logits()).
absl::Status RouteTokens(const MoeFfnWeightsView& w, const MoeShape& shape, const float* n,
                         int64_t m, MoeFfnScratch& scratch, cudaStream_t stream);
// The routed experts over x.rows activation rows: pair (row t, slot j < top_k) runs expert
// experts[t * top_k + j], an index into w's experts (device memory). Leaves each pair's output
// in scratch.y() at grouped row scratch.pair_rows()[t * top_k + j], and the rows per expert in
// scratch.expert_rows(). At most scratch.max_pairs() pairs.
absl::Status ExpertProducts(const MoeFfnWeightsView& w, float eps, const int32_t* experts,
                            int top_k, const Int8Activations& x, MoeFfnScratch& scratch,
                            cudaStream_t stream);
// ExpertProducts after the grouping (scratch's expert_rows, source_rows, row_expert, pair_rows,
// items already hold `pairs` grouped rows): the grouped gate/up, epilogue and down products.
absl::Status GroupedExpertProducts(const MoeFfnWeightsView& w, float eps, int64_t pairs,
                                   const Int8Activations& x, MoeFfnScratch& scratch,
                                   cudaStream_t stream);
// out = the weighted sum, in top-k order, of y's rows pair_rows[t * top_k + j] with RouteTokens'
// weights, + the shared expert (on nq, gated by its router logit) when the block has one.
absl::Status SharedExpertAndCombine(const MoeFfnWeightsView& w, const MoeShape& shape,
                                    const Int8Activations& nq, const float* y,
                                    const int32_t* pair_rows, float* out, MoeFfnScratch& scratch,
                                    TernaryGemm* gemm, cudaStream_t stream);

}  // namespace bitserve::cuda
