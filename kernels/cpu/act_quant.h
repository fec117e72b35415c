// Per-token symmetric int8 activation quantization of BitNet b1.58 (transformers' ActQuant):
//   s = 127 / max(|x|, 1e-5);  q = clamp(round_half_even(x * s), -128, 127);  x ~= q / s
// evaluated in float32 exactly as torch does it: s = (1 / max(|x|, 1e-5)) * 127.
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// x: [rows, dim] float32; q: [rows, dim]; scales: [rows], the multiplier s of each row.
void ActQuantPerToken(const float* x, int64_t rows, int64_t dim, int8_t* q, float* scales);

}  // namespace bitserve::cpu
