// float32 activations x bf16 weights, float32 accumulation: the tied LM head
// (logits = x . Embedding^T) and embedding-row gathers.
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// x: [m, k] float32; w: [n, k] bf16 bits; y: [m, n] = x . w^T.
void Bf16Matmul(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y);

// out[t] = float(table[ids[t]]) for rows of `dim` bf16 values. ids must be in range.
void Bf16GatherRows(const uint16_t* table, int64_t dim, const int32_t* ids, int64_t count,
                    float* out);

}  // namespace bitserve::cpu
