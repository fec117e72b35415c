// The final RMSNorm and the bf16 LM head (logits = RMSNorm_final(x) . W^T, W [vocab, hidden] bf16,
// tied to the embedding or not), for the rows of a batch that want logits.
//
// Numerics against the CPU reference (cpu::RmsNorm then cpu::Bf16Matmul, float32 activations times
// widened bf16 weights): the normed row is computed with the CPU's operations (bit-exact up to the
// float64 sum order, act_quant.cuh) and then rounded to bf16 (round to nearest even), because
// cuBLAS multiplies bf16 by bf16 on the tensor cores (float32 accumulation). Rounding the
// activation costs a relative error of at most 2^-9 per product; over a row the errors are
// independent, so a logit moves by about 2^-9 * sqrt(sum_i (x_i w_i)^2), typically ~1e-3 of the
// row's logit scale. op_test.cu checks the GPU logits against cpu::Bf16Matmul of the unrounded
// row (relative L2 error per row <= 1e-2) and of the bf16-rounded row (<= 1e-5: what remains is
// float32 summation order).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/device_buffer.cuh"

namespace bitserve::cuda {

// out[r] = bf16(RMSNorm(x[row_index[r]]) * weight) for r < rows; x: [*, dim] float32; row_index:
// [rows] device (null: row r itself); out: [rows, dim] bf16 bits. `normed` [rows, dim] receives
// the float norm output when not null (tests).
absl::Status RmsNormToBf16(const float* x, const int32_t* row_index, int64_t rows, int64_t dim,
                           const float* weight, float eps, uint16_t* out, float* normed,
                           cudaStream_t stream);

// Owns the cuBLAS handle and its workspace (set explicitly, so calls can be captured in CUDA
// graphs). One per stream.
class Bf16LmHead {
 public:
  static absl::StatusOr<std::unique_ptr<Bf16LmHead>> Create(cudaStream_t stream);
  ~Bf16LmHead();
  Bf16LmHead(const Bf16LmHead&) = delete;
  Bf16LmHead& operator=(const Bf16LmHead&) = delete;

  // logits [rows, vocab] float32 = x [rows, hidden] bf16 . weight [vocab, hidden]^T, float32
  // accumulation.
  absl::Status Run(const uint16_t* weight, int64_t vocab, int64_t hidden, const uint16_t* x,
                   int64_t rows, float* logits, cudaStream_t stream);

 private:
  Bf16LmHead() = default;
  void* handle_ = nullptr;  // cublasHandle_t, kept out of this header
  DeviceBuffer<uint8_t> workspace_;
};

}  // namespace bitserve::cuda
