#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/random_fill.cuh"

namespace bitserve::cuda {
namespace {

__device__ float RandomNormal(uint64_t seed, int64_t i) {
  const uint64_t a = RandomMix(seed ^ (2 * static_cast<uint64_t>(i)));
  const uint64_t b = RandomMix(seed ^ (2 * static_cast<uint64_t>(i) + 1));
  const float scale = 1.0f / 4294967296.0f;
  const float s = static_cast<float>(a & 0xffffffffu) * scale +
                  static_cast<float>(a >> 32) * scale +
                  static_cast<float>(b & 0xffffffffu) * scale + static_cast<float>(b >> 32) * scale;
  return (s - 2.0f) * 1.7320508f;
}

__device__ uint16_t ToBf16(float f) {  // round to nearest even (finite inputs)
  uint32_t u = __float_as_uint(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__global__ void FillBf16Kernel(uint16_t* out, int64_t n, float mean, float stddev, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = ToBf16(mean + stddev * RandomNormal(seed, i));
  }
}

__global__ void FillFloatKernel(float* out, int64_t n, float mean, float stddev, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = mean + stddev * RandomNormal(seed, i);
  }
}

unsigned Blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536));
}

}  // namespace

absl::Status FillRandomBf16(uint16_t* out, int64_t n, float mean, float stddev, uint64_t seed,
                            cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  FillBf16Kernel<<<Blocks(n), 256, 0, stream>>>(out, n, mean, stddev, seed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status FillRandomFloat(float* out, int64_t n, float mean, float stddev, uint64_t seed,
                             cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  FillFloatKernel<<<Blocks(n), 256, 0, stream>>>(out, n, mean, stddev, seed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
