#include <algorithm>

#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/random_fill.cuh"
#include "kernels/cuda/ternary/random_ternary.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

// Word w of the layout: uint4 u = w / 4 (component w % 4: .x row g, .y row g + 8, .z / .w the
// same rows 64 inputs on), tile u / 32 = (row tile, k-tile), lane u % 32 = (g, t).
__global__ void FillPackedTernaryKernel(uint32_t* words, int64_t n_words, int64_t rows,
                                        int64_t cols, int64_t k_tiles, uint64_t seed) {
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; w < n_words;
       w += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int comp = static_cast<int>(w % 4);
    const int64_t u = w / 4, tile = u / 32;
    const int lane = static_cast<int>(u % 32), g = lane / 4, t = lane % 4;
    const int64_t row = (tile / k_tiles) * 16 + g + ((comp & 1) != 0 ? 8 : 0);
    const int64_t k0 = (tile % k_tiles) * 128 + ((comp & 2) != 0 ? 64 : 0) + 16 * t;
    uint64_t r0 = RandomMix(seed ^ (2 * static_cast<uint64_t>(w)));
    uint64_t r1 = RandomMix(seed ^ (2 * static_cast<uint64_t>(w) + 1));
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {  // input k0 + i = k0 + 4j + b
      const uint32_t v =
          static_cast<uint32_t>((i < 12 ? r0 >> (5 * i) : r1 >> (5 * (i - 12))) & 31);
      const uint32_t code = v < 9 ? 0u : (v < 18 ? 2u : 1u);  // -1, +1, 0
      const int j = i / 4, b = i % 4;
      if (row < rows && k0 + i < cols) word |= code << (8 * b + 2 * j);
    }
    words[w] = word;
  }
}

}  // namespace

absl::Status FillRandomPackedTernary(uint32_t* words, int64_t rows, int64_t cols, uint64_t seed,
                                     cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError("FillRandomPackedTernary: empty matrix");
  }
  const int64_t n_words = PaddedRows(rows) * PaddedInputs(cols) / 16;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n_words + 255) / 256, 65536));
  FillPackedTernaryKernel<<<blocks, 256, 0, stream>>>(words, n_words, rows, cols,
                                                      PaddedInputs(cols) / kTernaryKTile, seed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
