#include "kernels/cuda/norm/fused_norm_quantize.cuh"
#include "kernels/cuda/norm/gated_ffn.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"

namespace bitserve::cuda {
namespace {

using internal::ScaleOutput;

struct GateUpProducer {
  const int4* acc;  // [rows][2 * inter4]
  const float* x_scales;
  int inter4;
  int gate_mode, up_mode;
  float gate_value, up_value;

  __device__ float Relu2Mul(int g, int u, float xs) const {
    const float gate = ScaleOutput(g, xs, gate_mode, gate_value);
    const float up = ScaleOutput(u, xs, up_mode, up_value);
    const float r = gate > 0.0f ? gate : 0.0f;  // NaN -> 0, as the CPU's comparison
    return __fmul_rn(__fmul_rn(r, r), up);
  }
  __device__ float4 Load(int64_t row, int i) const {
    const float xs = __ldg(x_scales + row);
    const int4 g = __ldg(acc + row * 2 * inter4 + i);
    const int4 u = __ldg(acc + row * 2 * inter4 + inter4 + i);
    return make_float4(Relu2Mul(g.x, u.x, xs), Relu2Mul(g.y, u.y, xs), Relu2Mul(g.z, u.z, xs),
                       Relu2Mul(g.w, u.w, xs));
  }
};

// Row r of a grouped product: its expert's scales and sub-norm row (after the wait: the routing
// kernels wrote row_expert).
struct GroupedGateUpProducer {
  const int4* acc;
  const float* x_scales;
  int inter4;
  GroupedGateUp experts;

  __device__ float Relu2Mul(int g, int u, float xs, const TernaryOutputScale& gs,
                            const TernaryOutputScale& us) const {
    const float gate = ScaleOutput(g, xs, static_cast<int>(gs.mode), gs.value);
    const float up = ScaleOutput(u, xs, static_cast<int>(us.mode), us.value);
    const float r = gate > 0.0f ? gate : 0.0f;
    return __fmul_rn(__fmul_rn(r, r), up);
  }
  __device__ float4 Load(int64_t row, int i) const {
    const int e = experts.row_expert[row];
    const int64_t source = experts.source_rows != nullptr ? experts.source_rows[row] : row;
    const float xs = x_scales[source];
    const TernaryOutputScale gs = experts.gate_scales[e], us = experts.up_scales[e];
    const int4 g = acc[row * 2 * inter4 + i];
    const int4 u = acc[row * 2 * inter4 + inter4 + i];
    return make_float4(Relu2Mul(g.x, u.x, xs, gs, us), Relu2Mul(g.y, u.y, xs, gs, us),
                       Relu2Mul(g.z, u.z, xs, gs, us), Relu2Mul(g.w, u.w, xs, gs, us));
  }
  __device__ int64_t NormWeightOffset(int64_t row) const {
    return static_cast<int64_t>(experts.row_expert[row]) * inter4 * 4;
  }
};

}  // namespace

absl::Status GroupedGateUpRelu2NormQuantize(const int32_t* acc, const float* x_scales,
                                            const GroupedGateUp& experts, int64_t rows,
                                            int64_t inter, float eps, const Int8ActivationsOut& out,
                                            cudaStream_t stream) {
  if (absl::Status s =
          internal::ValidateFusedRow("GroupedGateUpRelu2NormQuantize", rows, inter, out);
      !s.ok()) {
    return s;
  }
  if (experts.row_expert == nullptr || experts.gate_scales == nullptr ||
      experts.up_scales == nullptr || experts.sub_norm_weights == nullptr) {
    return absl::InvalidArgumentError("GroupedGateUpRelu2NormQuantize: null expert operands");
  }
  const GroupedGateUpProducer producer{reinterpret_cast<const int4*>(acc), x_scales,
                                       static_cast<int>(inter / 4), experts};
  return internal::LaunchFusedNormQuantize<true>(producer, experts.sub_norm_weights, rows, inter,
                                                 eps, out, nullptr, stream);
}

absl::Status GateUpRelu2NormQuantize(const int32_t* acc, const float* x_scales,
                                     TernaryOutputScale gate_scale, TernaryOutputScale up_scale,
                                     int64_t rows, int64_t inter, const float* sub_norm_weight,
                                     float eps, const Int8ActivationsOut& out, float* normed,
                                     cudaStream_t stream) {
  if (absl::Status s = internal::ValidateFusedRow("GateUpRelu2NormQuantize", rows, inter, out);
      !s.ok()) {
    return s;
  }
  const GateUpProducer producer{reinterpret_cast<const int4*>(acc),
                                x_scales,
                                static_cast<int>(inter / 4),
                                static_cast<int>(gate_scale.mode),
                                static_cast<int>(up_scale.mode),
                                gate_scale.value,
                                up_scale.value};
  return internal::LaunchFusedNormQuantize<true>(producer, sub_norm_weight, rows, inter, eps, out,
                                                 normed, stream);
}

}  // namespace bitserve::cuda
