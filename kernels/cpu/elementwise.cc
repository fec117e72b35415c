#include "kernels/cpu/elementwise.h"

namespace bitserve::cpu {

void Relu2Mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float r = gate[i] > 0.0f ? gate[i] : 0.0f;
    out[i] = (r * r) * up[i];
  }
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace bitserve::cpu
