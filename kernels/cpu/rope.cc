#include "kernels/cpu/rope.h"

#include <cmath>

namespace bitserve::cpu {

std::vector<float> RopeInverseFrequencies(int64_t head_dim, double theta) {
  std::vector<float> inv(head_dim / 2);
  const float base = static_cast<float>(theta);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  return inv;
}

void RopeNeox(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* positions,
              const float* inv_freq, float attention_scaling) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_f(half), sin_f(half);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // The angle is rounded to float32 first, as torch forms it (position * inv_freq in fp32).
      float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_f[i] = std::cos(angle) * attention_scaling;
      sin_f[i] = std::sin(angle) * attention_scaling;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_f[i] - b * sin_f[i];
        v[i + half] = b * cos_f[i] + a * sin_f[i];
      }
    }
  }
}

}  // namespace bitserve::cpu
