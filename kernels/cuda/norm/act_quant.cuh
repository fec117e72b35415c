// Per-token int8 activation quantization on the GPU, alone and fused behind RMSNorm (the input
// norm, the attention sub-norm and the FFN sub-norm are all this op with their own weight).
// Same float operations, in the same order, as kernels/cpu/act_quant.h and kernels/cpu/rms_norm.h:
//   s = (1 / max(max|a|, 1e-5)) * 127;   q = clamp(round_half_even(a * s), -128, 127)
//   RMSNorm: a = w * (x * (1 / sqrt(float(sum(x^2) / dim) + eps)))   (sum in float64)
// Quantization is bit-exact against the CPU. The fused version is too, except that the float64
// sum of squares is added in another order: the float variance can differ by one ulp when the
// sum lies within ~dim * 2^-53 (relative) of a float rounding boundary (rare; see op_test.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/ternary/int8_activations.h"

namespace bitserve::cuda {

// x: [rows, dim] float32 (device). Writes out.values [rows, out.stride] (zeros past dim),
// out.scales [rows] and, when not null, out.sums [rows].
absl::Status QuantizeActivations(const float* x, int64_t rows, int64_t dim,
                                 const Int8ActivationsOut& out, cudaStream_t stream);

// RMSNorm with `weight` [dim] then the same quantization. `normed` [rows, dim] receives the
// float RMSNorm output when not null (tests; layers that also need the float value).
absl::Status RmsNormQuantizeActivations(const float* x, const float* weight, int64_t rows,
                                        int64_t dim, float eps, const Int8ActivationsOut& out,
                                        float* normed, cudaStream_t stream);

}  // namespace bitserve::cuda
