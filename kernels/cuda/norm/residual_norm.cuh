// The residual stream's adds, alone and fused with the next RMSNorm + int8 quantization (the
// post-attention norm after the attention residual, the next layer's input norm after the FFN
// residual). Reference: cpu::AddInPlace, then cpu::RmsNorm and cpu::ActQuantPerToken; the add is
// one float addition per element (bit-exact), the norm + quantization as act_quant.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/ternary/int8_activations.h"

namespace bitserve::cuda {

// x[i] += y[i] for n elements (device).
absl::Status AddResidual(float* x, const float* y, int64_t n, cudaStream_t stream);

// x += y ([rows, dim], updated in place), then out = quantize(RMSNorm(x) * weight). `normed`
// [rows, dim] receives the float RMSNorm output when not null. dim: a multiple of 4 up to 32768;
// x, y, weight, normed 16-byte aligned.
absl::Status AddRmsNormQuantize(float* x, const float* y, const float* weight, int64_t rows,
                                int64_t dim, float eps, const Int8ActivationsOut& out,
                                float* normed, cudaStream_t stream);

}  // namespace bitserve::cuda
