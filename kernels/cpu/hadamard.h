// The orthonormal Walsh-Hadamard rotation of q and k per attention head (QuaRot's rotation, issue
// 20 item 3): q . k is unchanged when both are rotated, while an outlier key channel's energy is
// spread over the whole block, so the per-token int8 / int4 scale of a KV row is no longer set by
// a few channels (EngineOptions::kv_rotation; measured in docs/quality.md).
//
// A head_dim-long row is split into blocks of B elements, B the largest power of two dividing
// head_dim (128: one block of 128; 96: three blocks of 32; odd: B = 1, the identity), and each
// block x[0..B) becomes H_B x / sqrt(B) with H_B Sylvester's Hadamard matrix. The arithmetic is
// fixed so that kernels/cuda/attention/hadamard_rotate.cuh gives the same bits:
//   for h = 1, 2, 4, ..., B / 2:            (butterfly stages, in this order)
//     for every pair (i, i + h) with i in an aligned group [g, g + h) of g a multiple of 2h:
//       (x[i], x[i + h]) = (x[i] + x[i + h], x[i] - x[i + h])      (float32, rounded each time)
//   then x[i] = x[i] * HadamardNorm(B) for every i                 (one float32 multiply)
// Only sums, differences and one product: no contraction into an FMA can change the result.
#pragma once

#include <cstdint>

namespace bitserve::cpu {

// B above: the largest power of two dividing head_dim (1 for odd head_dim). head_dim >= 1.
int HadamardBlock(int head_dim);

// 1 / sqrt(B) as a float: (float)(1.0 / std::sqrt((double)B)), the double result rounded once.
float HadamardNorm(int block);

// Rotates rows [rows][head_dim] in place (rows of any [tokens][heads][head_dim] buffer).
void HadamardRotateRows(float* x, int64_t rows, int head_dim);

}  // namespace bitserve::cpu
