#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/transfer/hidden_transfer.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kThreads = 256;

__device__ inline int Rows(int64_t max_rows, const int32_t* device_rows) {
  return device_rows != nullptr ? min(static_cast<int64_t>(*device_rows), max_rows)
                                : static_cast<int>(max_rows);
}

// kernels/bf16.h's FloatToBf16: round to nearest even, NaN stays NaN.
__device__ inline uint16_t ToBf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// One block per row; 4 elements per thread and pass.
__global__ void EncodeInt8Kernel(const float* __restrict__ x, int64_t max_rows,
                                 const int32_t* device_rows, int hidden,
                                 uint8_t* __restrict__ out) {
  const int rows = Rows(max_rows, device_rows);
  const int t = blockIdx.x;
  if (t >= rows) return;
  const float4* row = reinterpret_cast<const float4*>(x + static_cast<int64_t>(t) * hidden);
  const int n4 = hidden / 4;
  float amax = 0.0f;
  for (int i = threadIdx.x; i < n4; i += kThreads) {
    const float4 v = row[i];
    amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
  }
  for (int offset = 16; offset > 0; offset /= 2)
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  __shared__ float warp_max[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  if (threadIdx.x == 0) reinterpret_cast<float*>(out)[t] = __fdiv_rn(amax, 127.0f);
  const float inv = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  char4* q = reinterpret_cast<char4*>(out + 4 * static_cast<int64_t>(rows) +
                                      static_cast<int64_t>(t) * hidden);
  const auto quantize = [inv](float v) {
    return static_cast<signed char>(fminf(fmaxf(rintf(__fmul_rn(v, inv)), -127.0f), 127.0f));
  };
  for (int i = threadIdx.x; i < n4; i += kThreads) {
    const float4 v = row[i];
    q[i] = make_char4(quantize(v.x), quantize(v.y), quantize(v.z), quantize(v.w));
  }
}

__global__ void EncodeBf16Kernel(const float* __restrict__ x, int64_t max_rows,
                                 const int32_t* device_rows, int hidden,
                                 uint16_t* __restrict__ out) {
  const int rows = Rows(max_rows, device_rows);
  const int64_t t = blockIdx.x;
  if (t >= rows) return;
  for (int i = threadIdx.x; i < hidden; i += kThreads)
    out[t * hidden + i] = ToBf16(x[t * hidden + i]);
}

__global__ void DecodeKernel(TransferDtype dtype, const uint8_t* __restrict__ in, int64_t max_rows,
                             const int32_t* device_rows, int hidden, float* __restrict__ x) {
  const int rows = Rows(max_rows, device_rows);
  const int64_t t = blockIdx.x;
  float* row = x + t * hidden;
  if (t >= rows) {
    for (int i = threadIdx.x; i < hidden; i += kThreads) row[i] = 0.0f;
    return;
  }
  if (dtype == TransferDtype::kBf16) {
    const uint16_t* b = reinterpret_cast<const uint16_t*>(in) + t * hidden;
    for (int i = threadIdx.x; i < hidden; i += kThreads)
      row[i] = __uint_as_float(static_cast<uint32_t>(b[i]) << 16);
    return;
  }
  const float scale = reinterpret_cast<const float*>(in)[t];
  const int8_t* q =
      reinterpret_cast<const int8_t*>(in + 4 * static_cast<int64_t>(rows)) + t * hidden;
  for (int i = threadIdx.x; i < hidden; i += kThreads)
    row[i] = __fmul_rn(static_cast<float>(q[i]), scale);
}

absl::Status CheckShape(const char* what, int64_t max_rows, int64_t hidden) {
  if (max_rows < 0 || max_rows > 0x7fffffff || hidden <= 0 || hidden % 4 != 0 ||
      hidden > 0x7fffffff) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": bad shape [", max_rows, ", ", hidden,
                                                   "] (hidden must be a positive multiple of 4)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EncodeHidden(TransferDtype dtype, const float* x, int64_t max_rows,
                          const int32_t* device_rows, int64_t hidden, uint8_t* out,
                          cudaStream_t stream) {
  if (absl::Status s = CheckShape("EncodeHidden", max_rows, hidden); !s.ok()) return s;
  if (max_rows == 0) return absl::OkStatus();
  const int h = static_cast<int>(hidden);
  if (dtype == TransferDtype::kInt8) {
    EncodeInt8Kernel<<<static_cast<unsigned>(max_rows), kThreads, 0, stream>>>(x, max_rows,
                                                                               device_rows, h, out);
  } else {
    EncodeBf16Kernel<<<static_cast<unsigned>(max_rows), kThreads, 0, stream>>>(
        x, max_rows, device_rows, h, reinterpret_cast<uint16_t*>(out));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status DecodeHidden(TransferDtype dtype, const uint8_t* in, int64_t max_rows,
                          const int32_t* device_rows, int64_t hidden, float* x,
                          cudaStream_t stream) {
  if (absl::Status s = CheckShape("DecodeHidden", max_rows, hidden); !s.ok()) return s;
  if (max_rows == 0) return absl::OkStatus();
  DecodeKernel<<<static_cast<unsigned>(max_rows), kThreads, 0, stream>>>(
      dtype, in, max_rows, device_rows, static_cast<int>(hidden), x);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
