// WritePagedKv: the new tokens' keys and values into the paged cache, quantized on write to the
// cache's element type (kernels/kv_cache_format.h; layout in paged_attention.cuh). The element
// formulas are kv_cache_format.h's functions themselves, and the row reductions (max |x|, min,
// max) are exact whatever their order, so the stored bytes equal kernels/cpu/kv_quant.h's.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/attention/paged_attention_internal.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"

namespace bitserve::cuda {
namespace {

using paged_attention::Aligned16;
using paged_attention::KvDestination;

struct WriteArgs {
  const float* k;
  const float* v;
  uint8_t* k_cache;
  uint8_t* v_cache;
  uint16_t* k_params;
  uint16_t* v_params;
  KvDestination dest;
  int num_kv_heads, head_dim;
};

// bf16: one block per token, its K and V rows to one cache row, 4 elements per thread and step.
__global__ void __launch_bounds__(128) WriteBf16Kernel(WriteArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  const int t = blockIdx.x;
  const int64_t row = a.dest.Row(t);
  if (row < 0) return;
  const int row_width = a.num_kv_heads * a.head_dim;
  const int64_t src = static_cast<int64_t>(t) * row_width;
  __nv_bfloat16* k_cache = reinterpret_cast<__nv_bfloat16*>(a.k_cache) + row * row_width;
  __nv_bfloat16* v_cache = reinterpret_cast<__nv_bfloat16*>(a.v_cache) + row * row_width;
  for (int i = threadIdx.x * 4; i < row_width; i += blockDim.x * 4) {
    const float4 k4 = *reinterpret_cast<const float4*>(a.k + src + i);
    const float4 v4 = *reinterpret_cast<const float4*>(a.v + src + i);
    const __nv_bfloat162 k01 = __floats2bfloat162_rn(k4.x, k4.y);
    const __nv_bfloat162 k23 = __floats2bfloat162_rn(k4.z, k4.w);
    const __nv_bfloat162 v01 = __floats2bfloat162_rn(v4.x, v4.y);
    const __nv_bfloat162 v23 = __floats2bfloat162_rn(v4.z, v4.w);
    uint2 ku, vu;
    ku.x = *reinterpret_cast<const uint32_t*>(&k01);
    ku.y = *reinterpret_cast<const uint32_t*>(&k23);
    vu.x = *reinterpret_cast<const uint32_t*>(&v01);
    vu.y = *reinterpret_cast<const uint32_t*>(&v23);
    *reinterpret_cast<uint2*>(k_cache + i) = ku;
    *reinterpret_cast<uint2*>(v_cache + i) = vu;
  }
}

__device__ __forceinline__ float WarpMax(float x) {
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
__device__ __forceinline__ float WarpMin(float x) {
  for (int off = 16; off > 0; off /= 2) x = fminf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

// int8 / int4: one block per token, one warp per (K or V, KV head) row at a time; lane l owns the
// element pairs l, l + 32, ... (head_dim is even), so an int4 byte is written by one lane.
template <KvDtype kType>
__global__ void __launch_bounds__(128) WriteQuantizedKernel(WriteArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  const int t = blockIdx.x;
  const int64_t row = a.dest.Row(t);
  if (row < 0) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int pairs = a.head_dim / 2;
  const int64_t head_bytes = KvHeadBytes(kType, a.head_dim);
  for (int item = warp; item < 2 * a.num_kv_heads; item += blockDim.x / 32) {
    const int kv = item / a.num_kv_heads, head = item % a.num_kv_heads;
    const float* x =
        (kv == 0 ? a.k : a.v) + (static_cast<int64_t>(t) * a.num_kv_heads + head) * a.head_dim;
    const int64_t slot = row * a.num_kv_heads + head;  // (cache row, head)
    uint8_t* data = (kv == 0 ? a.k_cache : a.v_cache) + slot * head_bytes;
    uint16_t* params = (kv == 0 ? a.k_params : a.v_params) + slot * KvParamHalves(kType);
    if constexpr (kType == KvDtype::kInt8) {
      float abs_max = 0;
      for (int i = lane; i < a.head_dim; i += 32) abs_max = fmaxf(abs_max, fabsf(x[i]));
      const uint16_t scale_bits = KvInt8Scale(WarpMax(abs_max));
      const float scale = KvHalfToFloat(scale_bits);
      for (int j = lane; j < pairs; j += 32) {
        const float2 x2 = *reinterpret_cast<const float2*>(x + 2 * j);
        const uint32_t q0 = static_cast<uint8_t>(KvInt8Quantize(x2.x, scale));
        const uint32_t q1 = static_cast<uint8_t>(KvInt8Quantize(x2.y, scale));
        *reinterpret_cast<uint16_t*>(data + 2 * j) = static_cast<uint16_t>(q0 | (q1 << 8));
      }
      if (lane == 0) params[0] = scale_bits;
    } else {
      float lo = INFINITY, hi = -INFINITY;
      for (int i = lane; i < a.head_dim; i += 32) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
      }
      const uint16_t zero_bits = KvInt4Zero(WarpMin(lo));
      const float zero = KvHalfToFloat(zero_bits);
      const uint16_t scale_bits = KvInt4Scale(WarpMax(hi), zero);
      const float scale = KvHalfToFloat(scale_bits);
      for (int j = lane; j < pairs; j += 32) {
        const float2 x2 = *reinterpret_cast<const float2*>(x + 2 * j);
        data[j] = static_cast<uint8_t>(KvInt4Quantize(x2.x, scale, zero) |
                                       (KvInt4Quantize(x2.y, scale, zero) << 4));
      }
      if (lane == 0) {
        params[0] = scale_bits;
        params[1] = zero_bits;
      }
    }
  }
}

}  // namespace

absl::Status WritePagedKv(const float* k, const float* v, const AttentionBatch& batch,
                          const PagedKvLayer& cache, cudaStream_t stream) {
  RETURN_IF_ERROR(paged_attention::ValidateCache(batch, cache));
  if (batch.num_tokens == 0 || batch.num_entries == 0) return absl::OkStatus();
  if (k == nullptr || v == nullptr || !Aligned16(k) || !Aligned16(v) || !Aligned16(cache.k) ||
      !Aligned16(cache.v)) {
    return absl::InvalidArgumentError("WritePagedKv needs non-null 16-byte aligned k, v, cache");
  }
  WriteArgs a;
  a.k = k;
  a.v = v;
  a.k_cache = static_cast<uint8_t*>(cache.k);
  a.v_cache = static_cast<uint8_t*>(cache.v);
  a.k_params = cache.k_params;
  a.v_params = cache.v_params;
  a.dest = KvDestination::For(batch, cache);
  a.num_kv_heads = cache.num_kv_heads;
  a.head_dim = cache.head_dim;
  cudaError_t launched;
  switch (cache.dtype) {
    case KvDtype::kInt8:
      launched = LaunchDependent(WriteQuantizedKernel<KvDtype::kInt8>, dim3(batch.num_tokens),
                                 dim3(128), 0, stream, 1, a);
      break;
    case KvDtype::kInt4:
      launched = LaunchDependent(WriteQuantizedKernel<KvDtype::kInt4>, dim3(batch.num_tokens),
                                 dim3(128), 0, stream, 1, a);
      break;
    default:
      launched =
          LaunchDependent(WriteBf16Kernel, dim3(batch.num_tokens), dim3(128), 0, stream, 1, a);
      break;
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
