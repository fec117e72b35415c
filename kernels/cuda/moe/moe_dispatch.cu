#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/moe/moe_dispatch.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kBlock = 256;

unsigned Blocks(int64_t threads) { return static_cast<unsigned>((threads + kBlock - 1) / kBlock); }

__global__ void MapExpertsKernel(const int32_t* __restrict__ in, int64_t n,
                                 const int32_t* __restrict__ table, int table_size,
                                 int32_t* __restrict__ out) {
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int32_t id = in[i];
  out[i] = id >= 0 && id < table_size ? table[id] : 0;
}

// Block = one grouped row: its values as 4-byte words, then its scale and expert.
__global__ void GatherDispatchRowsKernel(const int8_t* __restrict__ x_values, int64_t x_stride,
                                         const float* __restrict__ x_scales,
                                         const int32_t* __restrict__ source_rows,
                                         const int32_t* __restrict__ keys,
                                         const int32_t* __restrict__ key_experts, int64_t row_words,
                                         int8_t* __restrict__ values, float* __restrict__ scales,
                                         int32_t* __restrict__ experts) {
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t r = blockIdx.x;
  const int64_t src = source_rows[r];
  const auto* from = reinterpret_cast<const uint32_t*>(x_values + src * x_stride);
  auto* to = reinterpret_cast<uint32_t*>(values + r * row_words * 4);
  for (int64_t i = threadIdx.x; i < row_words; i += blockDim.x) to[i] = from[i];
  if (threadIdx.x == 0) {
    scales[r] = x_scales[src];
    experts[r] = key_experts[keys[r]];
  }
}

// Block = one received row: a block-wide sum of its int8 values.
__global__ void LocalExpertRowsKernel(const int8_t* __restrict__ values, int64_t row_words,
                                      const int32_t* __restrict__ experts,
                                      const int32_t* __restrict__ local_index, int num_experts,
                                      int32_t* __restrict__ sums, int32_t* __restrict__ local,
                                      int32_t* __restrict__ bad) {
  __shared__ int32_t warp_sums[kBlock / 32];
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t r = blockIdx.x;
  const auto* row = reinterpret_cast<const uint32_t*>(values + r * row_words * 4);
  int32_t s = 0;
  for (int64_t i = threadIdx.x; i < row_words; i += blockDim.x) {
    const uint32_t w = row[i];
    s += static_cast<int8_t>(w & 0xff) + static_cast<int8_t>((w >> 8) & 0xff) +
         static_cast<int8_t>((w >> 16) & 0xff) + static_cast<int8_t>(w >> 24);
  }
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += warp_sums[w];
    sums[r] = total;
    const int32_t e = experts[r];
    const int32_t l = e >= 0 && e < num_experts ? local_index[e] : -1;
    local[r] = l >= 0 ? l : 0;
    if (l < 0) atomicExch(bad, e + 1);
  }
}

__device__ __forceinline__ uint16_t FloatToBf16Bits(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__global__ void ResultsInReceivedOrderKernel(const float* __restrict__ y,
                                             const int32_t* __restrict__ grouped_rows,
                                             int64_t hidden, bool bf16, void* __restrict__ out) {
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t r = blockIdx.x;
  const float* from = y + static_cast<int64_t>(grouped_rows[r]) * hidden;
  if (bf16) {
    uint16_t* to = static_cast<uint16_t*>(out) + r * hidden;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) to[i] = FloatToBf16Bits(from[i]);
  } else {
    float* to = static_cast<float*>(out) + r * hidden;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) to[i] = from[i];
  }
}

__global__ void Bf16ToFloatKernel(const uint16_t* __restrict__ in, int64_t n,
                                  float* __restrict__ out) {
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __uint_as_float(static_cast<uint32_t>(in[i]) << 16);
}

}  // namespace

absl::Status MapExperts(const int32_t* in, int64_t n, const int32_t* table, int table_size,
                        int32_t* out, cudaStream_t stream) {
  if (n < 0 || table_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MapExperts: ", n, " ids, table of ", table_size));
  }
  if (n == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(MapExpertsKernel, dim3(Blocks(n)), dim3(kBlock), 0,
                                                stream, 1, in, n, table, table_size, out));
  return absl::OkStatus();
}

absl::Status GatherDispatchRows(const int8_t* x_values, int64_t x_stride, const float* x_scales,
                                const int32_t* source_rows, const int32_t* keys,
                                const int32_t* key_experts, int64_t rows, int64_t row_bytes,
                                int8_t* values, float* scales, int32_t* experts,
                                cudaStream_t stream) {
  if (rows < 0 || row_bytes < 4 || row_bytes % 4 != 0 || x_stride < row_bytes ||
      x_stride % 4 != 0 || rows > 0x7fffffff) {
    return absl::InvalidArgumentError(absl::StrCat("GatherDispatchRows: ", rows, " rows of ",
                                                   row_bytes, " bytes from a stride of ",
                                                   x_stride));
  }
  if (rows == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(
      LaunchDependent(GatherDispatchRowsKernel, dim3(static_cast<unsigned>(rows)), dim3(128), 0,
                      stream, 1, x_values, x_stride, x_scales, source_rows, keys, key_experts,
                      row_bytes / 4, values, scales, experts));
  return absl::OkStatus();
}

absl::Status LocalExpertRows(const int8_t* values, int64_t rows, int64_t row_bytes,
                             const int32_t* experts, const int32_t* local_index, int num_experts,
                             int32_t* sums, int32_t* local, int32_t* bad, cudaStream_t stream) {
  if (rows < 0 || row_bytes < 4 || row_bytes % 4 != 0 || num_experts < 1 || rows > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("LocalExpertRows: ", rows, " rows of ", row_bytes, " bytes"));
  }
  if (rows == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(
      LocalExpertRowsKernel, dim3(static_cast<unsigned>(rows)), dim3(kBlock), 0, stream, 1, values,
      row_bytes / 4, experts, local_index, num_experts, sums, local, bad));
  return absl::OkStatus();
}

absl::Status ResultsInReceivedOrder(const float* y, const int32_t* grouped_rows, int64_t rows,
                                    int64_t hidden, bool bf16, void* out, cudaStream_t stream) {
  if (rows < 0 || hidden < 1 || rows > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("ResultsInReceivedOrder: ", rows, " rows of ", hidden));
  }
  if (rows == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(ResultsInReceivedOrderKernel,
                                                dim3(static_cast<unsigned>(rows)), dim3(kBlock), 0,
                                                stream, 1, y, grouped_rows, hidden, bf16, out));
  return absl::OkStatus();
}

absl::Status Bf16ToFloat(const uint16_t* in, int64_t n, float* out, cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError("Bf16ToFloat: negative count");
  if (n == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(
      LaunchDependent(Bf16ToFloatKernel, dim3(Blocks(n)), dim3(kBlock), 0, stream, 1, in, n, out));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
