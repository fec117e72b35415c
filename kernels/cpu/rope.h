// Rotary position embedding, NeoX (rotate-half) form, as transformers' LLaMA-family models apply
// it: for i < d/2, f_i = pos / theta^(2i/d) (float32, like torch), and
//   x'[i] = x[i] cos f_i - x[i + d/2] sin f_i,   x'[i + d/2] = x[i + d/2] cos f_i + x[i] sin f_i
#pragma once

#include <cstdint>
#include <vector>

namespace bitserve::cpu {

// inv_freq[i] = 1 / theta^(2i / head_dim), computed in float32 exactly as torch does (scaled
// variants: runtime/checkpoint/rope_scaling.h).
std::vector<float> RopeInverseFrequencies(int64_t head_dim, double theta);

// x: [tokens, heads, head_dim], rotated in place; positions: [tokens]. cos and sin are multiplied
// by `attention_scaling` (float32, as transformers does for YaRN; 1 otherwise).
void RopeNeox(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* positions,
              const float* inv_freq, float attention_scaling = 1.0f);

}  // namespace bitserve::cpu
