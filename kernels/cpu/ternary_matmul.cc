#include "kernels/cpu/ternary_matmul.h"

#include "kernels/cpu/parallel.h"

namespace bitserve::cpu {
namespace {

// |sum| <= 128 * in, so int32 holds it for in < 2^24.
inline int32_t DotInt8(const int8_t* a, const int8_t* b, int64_t n) {
  int32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<int32_t>(a[i]) * static_cast<int32_t>(b[i]);
  return acc;
}

template <typename Store>
void ForEachDot(const int8_t* xq, int64_t m, const int8_t* w, int64_t out, int64_t in,
                const Store& store) {
  // Output rows are split over threads; each weight row is read once for all m tokens.
  ParallelFor(out, 64, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int8_t* wr = w + o * in;
      for (int64_t t = 0; t < m; ++t) store(t, o, DotInt8(xq + t * in, wr, in));
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

void TernaryMatmulInt32(const int8_t* xq, int64_t m, const int8_t* w, int64_t out, int64_t in,
                        int32_t* acc) {
  ForEachDot(xq, m, w, out, in, [&](int64_t t, int64_t o, int32_t v) { acc[t * out + o] = v; });
}

}  // namespace bitserve::cpu
