// The GPU layout of a ternary weight matrix, built once at load time on the host (no CUDA here),
// and a CPU model of the product over that layout for tests.
//
// W is [rows = output features, cols = input features] with w in {-1, 0, +1}; code c = w + 1.
//
// Word: 32 bits hold the codes of 16 consecutive inputs k0 .. k0+15 of one row,
//     bits 8*b + 2*j .. 8*b + 2*j + 1  =  code of input k0 + 4*j + b      (j, b = 0..3)
//   so (word >> 2*j) & 0x03030303 is the 4 codes of inputs k0+4j .. k0+4j+3, one per byte, in
//   the byte order of the int32 that holds x[k0+4j .. k0+4j+3]: one __dp4a, or one int8 MMA
//   fragment register, with no byte shuffling.
//
// Tile: 16 rows x 128 inputs = 128 words = 512 bytes = one 16-byte uint4 per lane of a warp.
//   Lane l = 4*g + t (g = 0..7, t = 0..3) of tile (row r0, input k0) holds
//     .x  row r0+g    inputs k0 +      16t .. +15        .z  row r0+g    inputs k0 + 64 + 16t ..
//     .y  row r0+g+8  inputs k0 +      16t .. +15        .w  row r0+g+8  inputs k0 + 64 + 16t ..
//
//        words of one tile, as lanes load them (each cell one uint4 = 4 words):
//        lane:   0        1        2        3        4       ...  31
//              g0,t0    g0,t1    g0,t2    g0,t3    g1,t0    ...  g7,t3
//
//   Why: lane (g, t) then holds exactly what the int8 mma.m16n8k32 A fragment asks of it (rows
//   g and g+8, input groups 4t.. and 16+4t..) once the k axis inside each 32-step is permuted
//   (slot 4t+b of step (c, h) = input k0 + 64c + 16t + 8h + b); B is permuted the same way, so the
//   sum is unchanged, and B's registers for token n are the uint4 x[n][k0 + 64c + 16t ..]. The
//   same uint4 feeds a dp4a kernel (two rows x 32 inputs per lane). A warp's tile is one fully
//   coalesced 512-byte load.
//
// Order: tile (R, K) is uint4 block R * k_tiles + K, i.e. all k-tiles of row tile R are
//   contiguous, so a warp (or a block) streaming one row tile reads consecutive memory.
// Padding: rows to a multiple of 16 and inputs to a multiple of 128, with code 0. Code 0 adds 0 to
//   the code products whatever the activation holds, so padding never needs a zeroed activation.
//
// Activations (int8) for these kernels are [tokens, stride] with stride >= PaddedInputs(cols) and
// a multiple of 16 (the kernels load 16 bytes at a time up to the padded width; what lies past
// `cols` is multiplied by code 0). Alongside: the per-token scale s (x ~= q / s) and the per-token
// sum of q, since
//     dot(q, w) = sum_k q_k * c_k  -  sum_k q_k          (exact in int32)
//
// Scale: TernaryOutputScale is the per-matrix scale in the form the float epilogue applies; see
// FoldWeightScale.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitserve::cuda {

inline constexpr int64_t kTernaryRowTile = 16;     // rows per tile
inline constexpr int64_t kTernaryKTile = 128;      // inputs per tile
inline constexpr int64_t kTernaryTileWords = 128;  // 32-bit words per tile (512 bytes)

inline constexpr int64_t PaddedRows(int64_t rows) {
  return (rows + kTernaryRowTile - 1) / kTernaryRowTile * kTernaryRowTile;
}
inline constexpr int64_t PaddedInputs(int64_t cols) {
  return (cols + kTernaryKTile - 1) / kTernaryKTile * kTernaryKTile;
}

// How the epilogue turns an exact int32 sum into the float output, for token scale xs:
//   kMultiply:       y = acc / xs * value        (two float32 roundings, in this order)
//   kDivideProduct:  y = acc / (xs * value)
// These are the two forms cpu::TernaryMatmul evaluates; kDivideProduct is only used where
// kMultiply would round differently.
struct TernaryOutputScale {
  enum class Mode : int32_t { kMultiply = 0, kDivideProduct = 1 };
  Mode mode = Mode::kMultiply;
  float value = 1.0f;
};

// autobitlinear (y = acc/xs * ws) is kMultiply as is. bitlinear (y = acc / (xs * ws)) becomes
// kMultiply by 1/ws when ws is a power of two in [2^-20, 2^20]: then xs*ws and the division by it
// only shift exponents, so acc/xs * (1/ws) rounds identically (results stay normal floats, since
// |acc/xs| >= 1/(127e5) for acc != 0). Any other bitlinear scale keeps the two-operation form.
TernaryOutputScale FoldWeightScale(cpu::WeightScale scale);

// A matrix in the GPU layout, on the host.
struct PackedTernaryMatrix {
  int64_t rows = 0, cols = 0;                // logical shape [out, in]
  int64_t padded_rows = 0, padded_cols = 0;  // PaddedRows(rows), PaddedInputs(cols)
  std::vector<uint32_t> words;               // padded_rows * padded_cols / 16 words
  TernaryOutputScale scale;

  int64_t row_tiles() const { return padded_rows / kTernaryRowTile; }
  int64_t k_tiles() const { return padded_cols / kTernaryKTile; }
  int64_t bytes() const { return static_cast<int64_t>(words.size()) * 4; }
};

// Repacks the CPU form (int8 [rows, cols] in {-1, 0, +1}, runtime's TernaryMatrix::values).
// InvalidArgument for a value outside {-1, 0, 1}, a non-positive shape, or a non-finite or
// non-positive scale.
absl::StatusOr<PackedTernaryMatrix> PackTernaryMatrix(const int8_t* values, int64_t rows,
                                                      int64_t cols, cpu::WeightScale scale);

// Word index of (row, input) in `words` and the bit offset of its code; the one place the layout
// formula lives on the host (packing and the reference use it, tests check it against the picture).
struct TernaryCodePosition {
  int64_t word;
  int shift;
};
TernaryCodePosition LocateTernaryCode(int64_t k_tiles, int64_t row, int64_t col);

// The code (0, 1, 2) at (row, col) of a packed matrix; padding reads as 0.
int TernaryCodeAt(const PackedTernaryMatrix& w, int64_t row, int64_t col);

// CPU model of the GPU product on the packed layout, walking tiles and words as the kernels do:
//   acc[t][o] = sum over words of dp4a(codes, x) - x_sum[t]
// x: [m, x_stride] int8 (x_stride >= padded_cols; bytes past cols may hold anything);
// x_sum: [m], the sum of x[t][0 .. cols). acc: [m, rows].
void PackedTernaryMatmulInt32Reference(const PackedTernaryMatrix& w, const int8_t* x,
                                       int64_t x_stride, const int32_t* x_sum, int64_t m,
                                       int32_t* acc);

// The float epilogue on the host, operation for operation what the kernels do.
float ApplyTernaryOutputScale(int32_t acc, float x_scale, TernaryOutputScale scale);

}  // namespace bitserve::cuda
