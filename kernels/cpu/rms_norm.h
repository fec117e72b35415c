// RMSNorm as transformers' BitNetRMSNorm computes it in float32:
//   out = weight * (x * rsqrt(mean(x^2) + eps))
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// x, out: [rows, dim] (out may alias x); weight: [dim].
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

}  // namespace bitserve::cpu
