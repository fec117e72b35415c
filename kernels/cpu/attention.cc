#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bitserve::cpu {

void AttentionCausal(const float* q, int64_t tokens, int64_t start_pos, const float* k,
                     const float* v, int64_t kv_stride, const AttentionShape& shape, float* out) {
  const int64_t heads = shape.heads, dim = shape.head_dim;
  const int64_t group = heads / shape.kv_heads;
  ParallelFor(tokens * heads, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(start_pos + tokens);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / heads, h = item % heads, kvh = h / group;
      const float* qv = q + (t * heads + h) * dim;
      const int64_t keys = start_pos + t + 1;
      float max_score = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        const float* kv = k + j * kv_stride + kvh * dim;
        float dot = 0;
        for (int64_t i = 0; i < dim; ++i) dot += qv[i] * kv[i];
        scores[j] = dot * shape.scale;
        max_score = std::max(max_score, scores[j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < keys; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      float* o = out + (t * heads + h) * dim;
      std::fill(o, o + dim, 0.0f);
      for (int64_t j = 0; j < keys; ++j) {
        const float p = scores[j] / sum;
        const float* vv = v + j * kv_stride + kvh * dim;
        for (int64_t i = 0; i < dim; ++i) o[i] += p * vv[i];
      }
    }
  });
}

}  // namespace bitserve::cpu
