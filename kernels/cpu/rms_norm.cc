#include "kernels/cpu/rms_norm.h"

#include <cmath>

#include "kernels/cpu/parallel.h"

namespace bitserve::cpu {

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps,
             float* out) {
  ParallelFor(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * dim;
      float* yr = out + r * dim;
      // Double accumulation keeps the mean exact to float32 rounding whatever dim is, so the
      // result does not depend on summation order (torch's order differs from ours).
      double sum = 0;
      for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(xr[i]) * xr[i];
      float variance = static_cast<float>(sum / static_cast<double>(dim));
      float inv = 1.0f / std::sqrt(variance + eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
    }
  });
}

}  // namespace bitserve::cpu
