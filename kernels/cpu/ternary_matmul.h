// Ternary weight x int8 activation product, the reference for every ternary kernel:
//   acc[t][o] = sum_i xq[t][i] * w[o][i]        (w in {-1, 0, +1}, exact in int32)
//   y[t][o]   = acc / x_scale[t] * ws            (autobitlinear: W = T * ws)
//   y[t][o]   = acc / (x_scale[t] * ws)          (bitlinear:     W = T / ws)
// in float32, in the order transformers evaluates them, so that the reference reproduces its
// roundings (a 1-ulp difference can flip the next layer's int8 rounding).
#pragma once

#include <cstdint>
#include <vector>

namespace bitserve::cpu {

// A matrix's stored weight_scale and how it applies.
struct WeightScale {
  float value = 1.0f;
  bool divide = false;  // bitlinear
  float multiplier() const { return divide ? 1.0f / value : value; }
};

}  // namespace bitserve::cpu

namespace bitserve {

// A ternary weight matrix in the CPU reference's layout: int8 [out, in], its weight_scale folded
// into one multiplier.
struct TernaryMatrix {
  int64_t rows = 0;            // output features
  int64_t cols = 0;            // input features
  std::vector<int8_t> values;  // [rows, cols] in {-1, 0, +1}
  cpu::WeightScale scale;      // real weight = values * scale.multiplier()
};

}  // namespace bitserve

namespace bitserve::cpu {

// xq: [m, in] int8; x_scale: [m]; w: [out, in] int8 holding -1/0/+1; y: [m, out].
void TernaryMatmul(const int8_t* xq, const float* x_scale, int64_t m, const int8_t* w, int64_t out,
                   int64_t in, WeightScale ws, float* y);

// Any int8 weights [out, in] with a multiplier per output row (the int8 LM head: weights from
// QuantizeBf16RowsInt8, bf16_matmul.h): y[t][o] = acc / x_scale[t] * w_scale[o].
void Int8MatmulRowScales(const int8_t* xq, const float* x_scale, int64_t m, const int8_t* w,
                         int64_t out, int64_t in, const float* w_scale, float* y);

// The int32 sums alone (for bit-exact kernel tests): acc: [m, out].
void TernaryMatmulInt32(const int8_t* xq, int64_t m, const int8_t* w, int64_t out, int64_t in,
                        int32_t* acc);

}  // namespace bitserve::cpu
