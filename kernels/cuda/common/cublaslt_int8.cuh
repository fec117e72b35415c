// int8 x int8 -> int32 products on cuBLASLt's tensor-core kernels, for the ternary GEMM's unpacked
// weights (ternary_gemm.cu) and the int8 LM head (head/int8_lm_head.cu). Column-major view of
// row-major data, the "TN" form cuBLASLt's int8 kernels require:
//   products^T [rows, tokens] (leading dimension ldc) = W (k x rows, op T) x X^T (k x tokens, op N)
// with W [rows, k] and X [tokens, x_stride] row-major; k, x_stride and ldc multiples of 16 (every
// caller pads to 16), X 16-byte aligned. A plan (cuBLASLt's heuristic pick) is made on the first
// call of a shape and kept, so capture CUDA graphs after one plain call of each shape, or accept
// the host-only heuristic query inside the capture (the decode graphs do).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/device_buffer.cuh"

namespace bitserve::cuda {

// Owns the cuBLASLt handle, its workspace and the plans. Not thread-safe: one per stream.
class CublasLtInt8Matmul {
 public:
  static absl::StatusOr<std::unique_ptr<CublasLtInt8Matmul>> Create();
  ~CublasLtInt8Matmul();
  CublasLtInt8Matmul(const CublasLtInt8Matmul&) = delete;
  CublasLtInt8Matmul& operator=(const CublasLtInt8Matmul&) = delete;

  // products [tokens, ldc] int32 = x [tokens, k] . w [rows, k]^T, exact.
  absl::Status Run(const int8_t* w, int64_t rows, int64_t k, const int8_t* x, int64_t tokens,
                   int64_t x_stride, int32_t* products, int64_t ldc, cudaStream_t stream);

  int64_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  struct Plan;
  CublasLtInt8Matmul() = default;
  absl::StatusOr<const Plan*> FindPlan(int64_t rows, int64_t k, int64_t tokens, int64_t x_stride,
                                       int64_t ldc);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  std::vector<std::unique_ptr<Plan>> plans_;
};

}  // namespace bitserve::cuda
