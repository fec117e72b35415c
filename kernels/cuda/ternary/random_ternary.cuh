// A random packed ternary matrix made on the device (dummy-weight loads): codes in the layout of
// ternary_layout.h, each weight -1 or +1 with probability 9/32 and 0 with 14/32 (as the synthetic
// checkpoints of `make-model`), padding rows and inputs code 0 as the kernels require.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitserve::cuda {

// words: PaddedRows(rows) * PaddedInputs(cols) / 16 words (device).
absl::Status FillRandomPackedTernary(uint32_t* words, int64_t rows, int64_t cols, uint64_t seed,
                                     cudaStream_t stream);

}  // namespace bitserve::cuda
