// Random device memory for dummy-weight loads (`--load-format dummy`: a model's shapes with random
// weights made on the GPU, no checkpoint file). Counter-based (splitmix64 of seed and index): the
// same seed gives the same bytes on every GPU and launch shape.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitserve::cuda {

// n values near mean + stddev * N(0, 1) (Irwin-Hall of four uniforms), as bf16 / float32.
absl::Status FillRandomBf16(uint16_t* out, int64_t n, float mean, float stddev, uint64_t seed,
                            cudaStream_t stream);
absl::Status FillRandomFloat(float* out, int64_t n, float mean, float stddev, uint64_t seed,
                             cudaStream_t stream);

// Device-side splitmix64 (shared with the ternary fill).
__device__ __forceinline__ uint64_t RandomMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace bitserve::cuda
