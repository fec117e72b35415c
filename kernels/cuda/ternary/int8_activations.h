// Per-token int8 activations in device memory: what the quantizing kernels (act_quant.cuh) write
// and the ternary kernels (ternary_gemv.cuh, ternary_gemm.cuh) read. Plain pointers, no CUDA
// headers, so host code can pass them around. Row layout: ternary_layout.h, "Activations".
#pragma once

#include <cstdint>

namespace bitserve::cuda {

// Written by the quantizing kernels.
struct Int8ActivationsOut {
  int8_t* values = nullptr;  // [rows, stride]; columns [cols, stride) are written as 0
  float* scales = nullptr;   // [rows] multiplier s = 127 / max|x|, so x ~= q / s
  int32_t* sums = nullptr;   // [rows] sum of the row's int8 values; may be null when unused
  int64_t stride = 0;        // >= cols, multiple of 16
};

// Read by the ternary kernels.
struct Int8Activations {
  const int8_t* values = nullptr;  // [rows, stride]
  const float* scales = nullptr;   // [rows]
  const int32_t* sums = nullptr;   // [rows]
  int64_t rows = 0;                // tokens
  int64_t cols = 0;                // features (= the matrix's input count)
  int64_t stride = 0;              // >= PaddedInputs(cols), multiple of 16

  Int8Activations() = default;
  Int8Activations(const Int8ActivationsOut& out, int64_t rows, int64_t cols)
      : values(out.values),
        scales(out.scales),
        sums(out.sums),
        rows(rows),
        cols(cols),
        stride(out.stride) {}
};

}  // namespace bitserve::cuda
