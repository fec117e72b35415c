#include "kernels/cpu/ternary_matmul.h"

#include <vector>

#include "kernels/cpu/parallel.h"

namespace bitserve::cpu {
namespace {

// Dots of one weight row with m token rows; |sum| <= 128 * 128 * in: int32 holds it for in < 2^17.
// Compiled twice (AVX2 and baseline x86-64), picked at load time: the result is exact either way.
__attribute__((target_clones("avx2", "default"))) void DotRow(const int8_t* xq, int64_t m,
                                                              const int8_t* w, int64_t in,
                                                              int32_t* acc) {
  for (int64_t t = 0; t < m; ++t) {
    const int8_t* a = xq + t * in;
    int32_t sum = 0;
    for (int64_t i = 0; i < in; ++i) sum += static_cast<int32_t>(a[i]) * static_cast<int32_t>(w[i]);
    acc[t] = sum;
  }
}

template <typename Store>
void ForEachDot(const int8_t* xq, int64_t m, const int8_t* w, int64_t out, int64_t in,
                const Store& store) {
  // Output rows are split over threads; each weight row is read once for all m tokens.
  ParallelFor(out, 64, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> acc(m);
    for (int64_t o = begin; o < end; ++o) {
      DotRow(xq, m, w + o * in, in, acc.data());
      for (int64_t t = 0; t < m; ++t) store(t, o, acc[t]);
    }
  });
}

}  // namespace

void TernaryMatmul(const int8_t* xq, const float* x_scale, int64_t m, const int8_t* w, int64_t out,
                   int64_t in, WeightScale ws, float* y) {
  if (ws.divide) {
    ForEachDot(xq, m, w, out, in, [&](int64_t t, int64_t o, int32_t acc) {
      y[t * out + o] = static_cast<float>(acc) / (x_scale[t] * ws.value);
    });
  } else {
    ForEachDot(xq, m, w, out, in, [&](int64_t t, int64_t o, int32_t acc) {
      y[t * out + o] = static_cast<float>(acc) / x_scale[t] * ws.value;
    });
  }
}

void Int8MatmulRowScales(const int8_t* xq, const float* x_scale, int64_t m, const int8_t* w,
                         int64_t out, int64_t in, const float* w_scale, float* y) {
  ForEachDot(xq, m, w, out, in, [&](int64_t t, int64_t o, int32_t acc) {
    y[t * out + o] = static_cast<float>(acc) / x_scale[t] * w_scale[o];
  });
}

void TernaryMatmulInt32(const int8_t* xq, int64_t m, const int8_t* w, int64_t out, int64_t in,
                        int32_t* acc) {
  ForEachDot(xq, m, w, out, in, [&](int64_t t, int64_t o, int32_t v) { acc[t * out + o] = v; });
}

}  // namespace bitserve::cpu
