// The int8 LM head (EngineOptions::lm_head_dtype = kInt8, `--lm-head-dtype int8`): the LM head's
// bf16 weights quantized once per vocabulary row, the final-normed rows quantized per token, int32
// products, float logits. Bit-exact against the CPU reference:
//   weights (load time):  cpu::QuantizeBf16RowsInt8  -> q [padded_vocab, stride], d [vocab]
//   rows:                 cpu::RmsNorm + cpu::ActQuantPerToken (act_quant.cuh: only the float64
//                         sum of squares is added in another order)
//   logits:               cpu::Int8MatmulRowScales: float(acc) / s_x[r] * d[v]
// One or two rows run a GEMV that streams the int8 table once with 16-byte loads (dp4a); more run
// cuBLASLt's int8 tensor-core GEMM into an int32 scratch and a scaling epilogue.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/cublaslt_int8.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/ternary/int8_activations.h"

namespace bitserve::cuda {

// The quantized table's shape: rows padded to a multiple of 16 (cuBLASLt's int8 layouts), columns
// to a multiple of 16 (16-byte rows). Padding is zero.
int64_t Int8LmHeadPaddedVocab(int64_t vocab);
int64_t Int8LmHeadStride(int64_t hidden);

// A quantized LM head in device memory.
struct Int8LmHeadWeights {
  DeviceBuffer<int8_t> values;  // [Int8LmHeadPaddedVocab(vocab), Int8LmHeadStride(hidden)]
  DeviceBuffer<float> scales;   // [vocab] multipliers d: w ~= q * d
  int64_t vocab = 0, hidden = 0;
  int64_t bytes() const { return values.bytes() + scales.bytes(); }
};

// Quantizes a device bf16 table [vocab, hidden] (cpu::QuantizeBf16RowsInt8, bit-exact).
absl::StatusOr<Int8LmHeadWeights> QuantizeLmHeadInt8(const uint16_t* table, int64_t vocab,
                                                     int64_t hidden, cudaStream_t stream);

// out = quantize(RMSNorm(x[row_index[r]]) * weight) for r < rows (row_index null: row r): int8
// [rows, out.stride] and out.scales [rows] (out.sums unused). dim: a multiple of 4 up to 32768.
// `normed` [rows, dim] receives the float RMSNorm output when not null (tests).
absl::Status RmsNormQuantizeRows(const float* x, const int32_t* row_index, int64_t rows,
                                 int64_t dim, const float* weight, float eps,
                                 const Int8ActivationsOut& out, float* normed, cudaStream_t stream);

// Owns the GEMM path's cuBLASLt int8 matmul (common/cublaslt_int8.cuh) and int32 scratch. One per
// stream; calls can be captured in CUDA graphs.
class Int8LmHead {
 public:
  // max_rows: the most rows one Run multiplies (the scratch is [max_rows, padded vocab] int32).
  static absl::StatusOr<std::unique_ptr<Int8LmHead>> Create(int64_t vocab, int64_t max_rows);
  ~Int8LmHead();
  Int8LmHead(const Int8LmHead&) = delete;
  Int8LmHead& operator=(const Int8LmHead&) = delete;

  // logits [rows, vocab] float32 from x (int8 [rows, x.stride] with scales, x.cols = hidden).
  absl::Status Run(const Int8LmHeadWeights& w, const Int8Activations& x, float* logits,
                   cudaStream_t stream);
  // Rows up to this run the GEMV; more the GEMM (lm_head_benchmark: the GEMV is ahead at 1-2 rows
  // on the H100 and the H200, the GEMM from 4 on the H200 and from 8 on the H100). The GEMV alone
  // can run any count, in passes of kGemvPassRows (tests, benchmarks).
  static constexpr int kMaxGemvRows = 2;
  static constexpr int kGemvPassRows = 8;
  absl::Status RunGemv(const Int8LmHeadWeights& w, const Int8Activations& x, float* logits,
                       cudaStream_t stream);
  absl::Status RunGemm(const Int8LmHeadWeights& w, const Int8Activations& x, float* logits,
                       cudaStream_t stream);
  int64_t scratch_bytes() const {
    return products_.bytes() + (matmul_ ? matmul_->workspace_bytes() : 0);
  }

 private:
  Int8LmHead() = default;

  int64_t max_rows_ = 0;
  std::unique_ptr<CublasLtInt8Matmul> matmul_;  // null when made for GEMV rows only
  DeviceBuffer<int32_t> products_;              // [max_rows, padded vocab]
};

}  // namespace bitserve::cuda
