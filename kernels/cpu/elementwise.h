// Small element-wise ops of the BitNet layer.
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// out = relu(gate)^2 * up  (transformers' "relu2" activation times the up projection).
void Relu2Mul(const float* gate, const float* up, int64_t n, float* out);

// x += y.
void AddInPlace(float* x, const float* y, int64_t n);

}  // namespace bitserve::cpu
