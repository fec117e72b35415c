// Embedding lookup: rows of a bf16 table widened to float32 (exact). Reference:
// cpu::Bf16GatherRows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitserve::cuda {

// table: [vocab, dim] bf16 bits (device); ids: [rows] device, each in [0, vocab) (the engine
// validates them on the host); out: [rows, dim] float32.
absl::Status EmbeddingLookup(const uint16_t* table, int64_t dim, const int32_t* ids, int64_t rows,
                             float* out, cudaStream_t stream);

}  // namespace bitserve::cuda
