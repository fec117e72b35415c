// Ternary weight x int8 activation product for many tokens through cuBLASLt, and the one
// dispatch point for ternary products on the GPU (TernaryMatmul, TernaryMatmulInt32).
//
// TernaryGemm unpacks the packed weights (ternary_layout.h) to int8 {-1, 0, +1} in a scratch
// matrix, multiplies with cuBLASLt int8 x int8 -> int32 on the tensor cores (exact), and applies
// the float epilogue of ternary_layout.h. Unpacking costs one pass over 4x the packed bytes, small
// beside the product once M is in the hundreds; bench/cuda/kernel_benchmark.cu times it against
// the MMA GEMV kernels to place the crossover.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/cublaslt_int8.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemv.cuh"

namespace bitserve::cuda {

// Owns the scratch memory and the cuBLASLt int8 matmul (common/cublaslt_int8.cuh). Not
// thread-safe: one per stream. Plans are looked up on the first call for a shape, so capture CUDA
// graphs after one plain call of each shape.
class TernaryGemm {
 public:
  // Scratch for matrices up to [max_rows, max_cols] and up to max_tokens tokens.
  static absl::StatusOr<std::unique_ptr<TernaryGemm>> Create(int64_t max_rows, int64_t max_cols,
                                                             int64_t max_tokens);
  ~TernaryGemm();
  TernaryGemm(const TernaryGemm&) = delete;
  TernaryGemm& operator=(const TernaryGemm&) = delete;

  // y: [x.rows, w.rows] float32, equal bit for bit to cpu::TernaryMatmul.
  absl::Status Run(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                   cudaStream_t stream);
  // acc: [x.rows, w.rows], the exact int32 sums.
  absl::Status RunInt32(const TernaryMatrixView& w, const Int8Activations& x, int32_t* acc,
                        cudaStream_t stream);

  int64_t scratch_bytes() const;
  int64_t max_tokens() const { return max_tokens_; }
  int64_t max_cols() const { return max_cols_; }
  // Scratch for TernaryTiledMatmul's wgmma configurations, for activations of stride max_cols.
  int8_t* tiled_scratch() const { return permuted_.get(); }

 private:
  TernaryGemm() = default;
  absl::Status Multiply(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                        int32_t* acc, cudaStream_t stream);

  int64_t max_rows_ = 0, max_cols_ = 0, max_tokens_ = 0;
  std::unique_ptr<CublasLtInt8Matmul> matmul_;
  DeviceBuffer<int8_t> unpacked_;   // [padded_rows, padded_cols] row-major
  DeviceBuffer<int32_t> products_;  // [m, padded_rows]
  DeviceBuffer<int8_t> permuted_;   // the tiled wgmma kernels' activations [max_tokens, max_cols]
};

// The three ways to a ternary product, by token count (bench/cuda/kernel_benchmark.cu measures
// them side by side; docs/perf.md has the crossovers):
//   kGemv:   ternary_gemv.cuh, streaming the weights once for few tokens;
//   kTiled:  ternary_tiled_gemm.cuh, the fused tiled MMA kernel;
//   kCublas: TernaryGemm above (unpack + cuBLASLt), only where a TernaryGemm is given.
enum class TernaryProductPath { kGemv, kTiled, kCublas };
TernaryProductPath ChooseTernaryProductPath(const TernaryMatrixView& w, int64_t m, bool have_gemm);

// The dispatch point (gemm may be null). y / acc: [x.rows, w.rows].
absl::Status TernaryMatmul(TernaryGemm* gemm, const TernaryMatrixView& w, const Int8Activations& x,
                           float* y, cudaStream_t stream);
absl::Status TernaryMatmulInt32(TernaryGemm* gemm, const TernaryMatrixView& w,
                                const Int8Activations& x, int32_t* acc, cudaStream_t stream);

}  // namespace bitserve::cuda
