#include "kernels/cpu/act_quant.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace bitserve::cpu {

void ActQuantPerToken(const float* x, int64_t rows, int64_t dim, int8_t* q, float* scales) {
  ParallelFor(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * dim;
      float max_abs = 0.0f;
      for (int64_t i = 0; i < dim; ++i) max_abs = std::max(max_abs, std::fabs(xr[i]));
      // torch evaluates `127 / tensor` as `tensor.reciprocal() * 127`: two float32 roundings.
      // Doing the same keeps every int8 rounding decision identical to transformers'.
      const float s = (1.0f / std::max(max_abs, 1e-5f)) * 127.0f;
      scales[r] = s;
      int8_t* qr = q + r * dim;
      for (int64_t i = 0; i < dim; ++i) {
        // nearbyint rounds half to even in the default rounding mode, as torch.round does.
        float v = std::nearbyint(xr[i] * s);
        qr[i] = static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f));
      }
    }
  });
}

}  // namespace bitserve::cpu
