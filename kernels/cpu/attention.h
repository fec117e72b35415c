// Causal grouped-query attention over one sequence's contiguous K/V history, float32 throughout.
#pragma once

#include <cstdint>

namespace bitserve::cpu {

struct AttentionShape {
  int64_t heads = 0;     // query heads
  int64_t kv_heads = 0;  // key/value heads; query head h reads kv head h / (heads / kv_heads)
  int64_t head_dim = 0;
  float scale = 0;  // 1 / sqrt(head_dim)
};

// q: [tokens, heads, head_dim] for the tokens at positions start_pos .. start_pos + tokens - 1.
// k, v: [start_pos + tokens, kv_heads, head_dim] (history and the new tokens), rows kv_stride
// floats apart. Token t attends to keys 0 .. start_pos + t. out: [tokens, heads, head_dim].
void AttentionCausal(const float* q, int64_t tokens, int64_t start_pos, const float* k,
                     const float* v, int64_t kv_stride, const AttentionShape& shape, float* out);

}  // namespace bitserve::cpu
