// float32 activations x bf16 weights, float32 accumulation: the tied LM head
// (logits = x . Embedding^T) and embedding-row gathers.
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// x: [m, k] float32; w: [n, k] bf16 bits; y: [m, n] = x . w^T.
void Bf16Matmul(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y);

// Per-row symmetric int8 of a bf16 matrix [rows, cols] (the int8 LM head, --lm-head-dtype int8):
//   d[r] = max_i |w[r][i]| / 127 (float32; 1 for a row of zeros),
//   q[r][i] = clamp(round_half_even(w[r][i] / d[r]), -127, 127),   w ~= q * d.
// q: [rows, q_stride] (q_stride >= cols; columns past cols are written as 0).
void QuantizeBf16RowsInt8(const uint16_t* w, int64_t rows, int64_t cols, int8_t* q,
                          int64_t q_stride, float* d);

// out[t] = float(table[ids[t]]) for rows of `dim` bf16 values. ids must be in range.
void Bf16GatherRows(const uint16_t* table, int64_t dim, const int32_t* ids, int64_t count,
                    float* out);

}  // namespace bitserve::cpu
