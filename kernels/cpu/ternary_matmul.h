// Ternary weight x int8 activation product, the reference for every ternary kernel:
//   y[t][o] = (sum_i xq[t][i] * w[o][i]) / x_scale[t] * alpha
// with w in {-1, 0, +1}, the sum exact in int32, and the scales applied in float32.
// alpha is the per-matrix weight multiplier (weight_scale, or 1/weight_scale for bitlinear).
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// xq: [m, in] int8; x_scale: [m]; w: [out, in] int8 holding -1/0/+1; y: [m, out].
void TernaryMatmul(const int8_t* xq, const float* x_scale, int64_t m, const int8_t* w, int64_t out,
                   int64_t in, float alpha, float* y);

// The int32 sums alone (for bit-exact kernel tests): acc: [m, out].
void TernaryMatmulInt32(const int8_t* xq, int64_t m, const int8_t* w, int64_t out, int64_t in,
                        int32_t* acc);

}  // namespace bitserve::cpu
