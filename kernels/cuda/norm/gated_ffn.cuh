// The FFN middle of a BitNet layer in one pass per token: the float epilogue of the fused
// gate/up product (int32 sums of the [gate; up] matrix, ternary_layout.h scales per half), then
// relu(gate)^2 * up, the ffn_sub_norm RMSNorm and the int8 quantization for down_proj.
// Reference: cpu::TernaryMatmul's epilogue for each half, cpu::Relu2Mul, cpu::RmsNorm,
// cpu::ActQuantPerToken; all float operations as there (bit-exact) except the float64 sum of
// squares' order (act_quant.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {

// acc: [rows, 2 * inter] int32 (gate outputs, then up outputs); x_scales: [rows], the scales of
// the activations the product read. out: the quantized sub-normed activation [rows, inter];
// `normed` [rows, inter] receives the float sub-norm output when not null. inter: a multiple of 4
// up to 32768.
absl::Status GateUpRelu2NormQuantize(const int32_t* acc, const float* x_scales,
                                     TernaryOutputScale gate_scale, TernaryOutputScale up_scale,
                                     int64_t rows, int64_t inter, const float* sub_norm_weight,
                                     float eps, const Int8ActivationsOut& out, float* normed,
                                     cudaStream_t stream);

// The same for the rows of a grouped MoE product (ternary_grouped_gemv.cuh): row r used expert
// row_expert[r] (device), whose gate/up scales (device, [experts]) and sub-norm weights
// (sub_norm_weights + expert * inter) apply; its activation scale is x_scales[source_rows[r]]
// (source_rows null: x_scales[r]).
struct GroupedGateUp {
  const int32_t* row_expert = nullptr;
  const int32_t* source_rows = nullptr;
  const TernaryOutputScale* gate_scales = nullptr;
  const TernaryOutputScale* up_scales = nullptr;
  const float* sub_norm_weights = nullptr;  // [experts, inter]
};
absl::Status GroupedGateUpRelu2NormQuantize(const int32_t* acc, const float* x_scales,
                                            const GroupedGateUp& experts, int64_t rows,
                                            int64_t inter, float eps, const Int8ActivationsOut& out,
                                            cudaStream_t stream);

}  // namespace bitserve::cuda
