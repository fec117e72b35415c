#include "kernels/cpu/bf16_matmul.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/bf16.h"
#include "kernels/cpu/parallel.h"

namespace bitserve::cpu {
namespace {

// Eight independent partial sums let the compiler vectorize without reassociating floats itself,
// so the AVX2 and baseline clones (picked at load time) give identical results.
__attribute__((target_clones("avx2", "default"))) float Dot(const float* a, const float* b,
                                                            int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float tail = 0;
  for (; i < k; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

__attribute__((target_clones("avx2", "default"))) void WidenRow(const uint16_t* w, int64_t k,
                                                                float* row) {
  for (int64_t i = 0; i < k; ++i) row[i] = Bf16ToFloat(w[i]);
}

}  // namespace

void Bf16Matmul(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y) {
  ParallelFor(n, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> row(k);
    for (int64_t j = begin; j < end; ++j) {
      WidenRow(w + j * k, k, row.data());
      for (int64_t t = 0; t < m; ++t) y[t * n + j] = Dot(x + t * k, row.data(), k);
    }
  });
}

void Bf16GatherRows(const uint16_t* table, int64_t dim, const int32_t* ids, int64_t count,
                    float* out) {
  for (int64_t t = 0; t < count; ++t) {
    const uint16_t* src = table + static_cast<int64_t>(ids[t]) * dim;
    for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = Bf16ToFloat(src[i]);
  }
}

void QuantizeBf16RowsInt8(const uint16_t* w, int64_t rows, int64_t cols, int8_t* q,
                          int64_t q_stride, float* d) {
  ParallelFor(rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint16_t* row = w + r * cols;
      float amax = 0.0f;
      for (int64_t i = 0; i < cols; ++i) amax = std::max(amax, std::fabs(Bf16ToFloat(row[i])));
      const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
      d[r] = scale;
      int8_t* out = q + r * q_stride;
      for (int64_t i = 0; i < cols; ++i) {
        const float v = std::nearbyint(Bf16ToFloat(row[i]) / scale);
        out[i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
      }
      std::fill(out + cols, out + q_stride, int8_t{0});
    }
  });
}

}  // namespace bitserve::cpu
