// Ternary weight x int8 activation product for few tokens (decode, M = 1 .. 64; larger M works
// but ternary_gemm.cuh is the path for it): y[t][o] = sum_i x[t][i] * w[o][i], then the float
// epilogue of ternary_layout.h. Weights in the layout of ternary_layout.h, activations as
// int8_activations.h describes. The int32 sums are exact; the float output equals
// cpu::TernaryMatmul bit for bit (same two float operations, no contraction).
//
// Two kernel families, chosen by measurement (bench/cuda/kernel_benchmark.cu):
//   dp4a: a block streams one 16-row tile, its warps splitting the inputs; 4 dp4a per word per
//         token. Cheapest instruction count per weight byte for 1-2 tokens.
//   mma:  the same streaming, but the unpacked codes feed int8 mma.m16n8k32 (8 tokens per MMA),
//         so each unpacked word serves up to 64 tokens with few instructions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {

// A packed matrix in device memory (non-owning view).
struct TernaryMatrixView {
  const uint32_t* words = nullptr;  // 16-byte aligned, ternary_layout.h order
  int64_t rows = 0, cols = 0, padded_rows = 0, padded_cols = 0;
  TernaryOutputScale scale;

  int64_t row_tiles() const { return padded_rows / kTernaryRowTile; }
  int64_t k_tiles() const { return padded_cols / kTernaryKTile; }
  int64_t bytes() const { return padded_rows * padded_cols / 4; }
};

// The view of a [rows, cols] matrix in the layout of ternary_layout.h at `words` (padding derived).
inline TernaryMatrixView PackedMatrixView(const uint32_t* words, int64_t rows, int64_t cols,
                                          TernaryOutputScale scale) {
  TernaryMatrixView v;
  v.words = words;
  v.rows = rows;
  v.cols = cols;
  v.padded_rows = PaddedRows(rows);
  v.padded_cols = PaddedInputs(cols);
  v.scale = scale;
  return v;
}

// Owns the device copy of a packed matrix.
class DeviceTernaryMatrix {
 public:
  static absl::StatusOr<DeviceTernaryMatrix> Upload(const PackedTernaryMatrix& packed);
  // Random weights made on the device (random_ternary.cuh), for dummy-weight loads.
  static absl::StatusOr<DeviceTernaryMatrix> Random(int64_t rows, int64_t cols,
                                                    TernaryOutputScale scale, uint64_t seed);
  TernaryMatrixView view() const { return view_; }

 private:
  DeviceBuffer<uint32_t> words_;
  TernaryMatrixView view_;
};

// One kernel configuration. Benchmarks enumerate them; TernaryGemv picks one by token count and
// matrix shape (DefaultTernaryGemvConfig).
struct TernaryGemvConfig {
  enum class Kind { kDp4a, kMma };
  Kind kind = Kind::kMma;
  int tokens = 8;          // dp4a: exact token count (1..4); mma: tokens per block (8 * n_tiles)
  int row_tiles = 1;       // mma: warps along the rows of a block
  int warp_row_tiles = 1;  // mma: 16-row tiles each warp owns (they share its activation loads)
  int k_split = 8;         // warps sharing one row tile's inputs
  int unroll = 4;          // k-tiles per batch; the register pipeline keeps two batches in flight
  std::string Name() const;
  friend bool operator==(const TernaryGemvConfig&, const TernaryGemvConfig&) = default;

  static TernaryGemvConfig Dp4a(int tokens, int warps, int unroll) {
    TernaryGemvConfig c;
    c.kind = Kind::kDp4a;
    c.tokens = tokens;
    c.k_split = warps;
    c.unroll = unroll;
    return c;
  }
  static TernaryGemvConfig Mma(int tokens, int row_warps, int warp_row_tiles, int k_split,
                               int unroll) {
    TernaryGemvConfig c;
    c.tokens = tokens;
    c.row_tiles = row_warps;
    c.warp_row_tiles = warp_row_tiles;
    c.k_split = k_split;
    c.unroll = unroll;
    return c;
  }
};

// Every configuration compiled in, for benchmarks.
const std::vector<TernaryGemvConfig>& AllTernaryGemvConfigs();
// The configuration TernaryGemv uses for m tokens of matrix w (m >= 1).
TernaryGemvConfig DefaultTernaryGemvConfig(const TernaryMatrixView& w, int64_t m);

// y: [x.rows, w.rows] float32 (device). InvalidArgument on a shape or alignment mismatch.
absl::Status TernaryGemv(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                         cudaStream_t stream);
// The exact int32 sums instead of the float output: acc [x.rows, w.rows].
absl::Status TernaryGemvInt32(const TernaryMatrixView& w, const Int8Activations& x, int32_t* acc,
                              cudaStream_t stream);
// A given configuration; exactly one of y / acc is non-null.
absl::Status TernaryGemvWithConfig(const TernaryGemvConfig& config, const TernaryMatrixView& w,
                                   const Int8Activations& x, float* y, int32_t* acc,
                                   cudaStream_t stream);

// Shape and alignment checks shared by the ternary launchers.
absl::Status ValidateTernaryOperands(const TernaryMatrixView& w, const Int8Activations& x);

}  // namespace bitserve::cuda
