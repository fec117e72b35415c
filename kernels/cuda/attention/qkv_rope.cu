#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/attention/paged_attention_internal.cuh"
#include "kernels/cuda/attention/qkv_rope.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_info.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"

namespace bitserve::cuda {
namespace {

using internal::ScaleOutput;
using paged_attention::KvDestination;

constexpr int kThreads = 256;

struct QkvRopeArgs {
  const int32_t* acc;
  const float* x_scales;
  int q_mode, k_mode, v_mode;
  float q_value, k_value, v_value;
  int heads, kv_heads, head_dim;
  const int32_t* positions;
  const float* cos_sin;
  int64_t max_positions;
  float* q;
  // Float k and v rows, or (kToCache) the bf16 cache and where each token's row is.
  float* k;
  float* v;
  __nv_bfloat16* k_cache;
  __nv_bfloat16* v_cache;
  KvDestination dest;
};

// Blocks (token, part): a token's items, the (head, i < half) pairs of q and k and then the v
// elements, are spread over gridDim.y blocks. One block per token (1024 threads) was 6.7 us at
// one llama-70b token (5,632 items) on an H200; few tokens now get several blocks each. kToCache:
// k and v go to the token's cache row as bf16 (round to nearest even, as WritePagedKv), or nowhere
// when the token has no row (a padding row of a decode bucket).
template <bool kToCache>
__global__ void __launch_bounds__(kThreads) QkvEpilogueRopeKernel(QkvRopeArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  const int64_t t = blockIdx.x;
  const int half = a.head_dim / 2;
  const int qd = a.heads * a.head_dim, kvd = a.kv_heads * a.head_dim;
  const int32_t* row = a.acc + t * (qd + 2 * kvd);
  const float xs = a.x_scales[t];
  const int64_t pos = a.positions[t];
  const float* cos_row = a.cos_sin + pos * half;
  const float* sin_row = a.cos_sin + (a.max_positions + pos) * half;
  float *k_out = nullptr, *v_out = nullptr;
  __nv_bfloat16 *k_cache = nullptr, *v_cache = nullptr;
  if constexpr (!kToCache) {
    k_out = a.k + t * kvd;
    v_out = a.v + t * kvd;
  } else {
    const int64_t cache_row = a.dest.Row(static_cast<int>(t));
    if (cache_row >= 0) {
      k_cache = a.k_cache + cache_row * kvd;
      v_cache = a.v_cache + cache_row * kvd;
    }
  }
  auto store_kv = [&](bool is_k, int e, float value) {
    if constexpr (kToCache) {
      __nv_bfloat16* dst = is_k ? k_cache : v_cache;
      if (dst != nullptr) dst[e] = __float2bfloat16_rn(value);
    } else {
      (is_k ? k_out : v_out)[e] = value;
    }
  };
  const int pairs = (a.heads + a.kv_heads) * half;
  const int stride = gridDim.y * blockDim.x;
  const int first = blockIdx.y * blockDim.x + threadIdx.x;
  for (int p = first; p < pairs + kvd; p += stride) {
    if (p >= pairs) {
      const int e = p - pairs;
      store_kv(false, e, ScaleOutput(row[qd + kvd + e], xs, a.v_mode, a.v_value));
      continue;
    }
    const int h = p / half, i = p % half;
    const bool is_q = h < a.heads;
    const int col = (is_q ? h : h - a.heads) * a.head_dim + i;  // within q or k
    const int32_t* src = is_q ? row : row + qd;
    const int mode = is_q ? a.q_mode : a.k_mode;
    const float value = is_q ? a.q_value : a.k_value;
    const float x0 = ScaleOutput(src[col], xs, mode, value);
    const float x1 = ScaleOutput(src[col + half], xs, mode, value);
    const float c = __ldg(cos_row + i), s = __ldg(sin_row + i);
    const float r0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    const float r1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
    if (is_q) {
      a.q[t * qd + col] = r0;
      a.q[t * qd + col + half] = r1;
    } else {
      store_kv(true, col, r0);
      store_kv(true, col + half, r1);
    }
  }
}

absl::Status ValidateQkvShape(const QkvShape& shape, int64_t tokens, int64_t max_positions) {
  if (shape.heads <= 0 || shape.kv_heads <= 0 || shape.head_dim <= 0 || shape.head_dim % 2 != 0 ||
      max_positions <= 0 || tokens < 0 || tokens > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("QkvEpilogueRope: bad shape (heads ", shape.heads, ", kv_heads ",
                     shape.kv_heads, ", head_dim ", shape.head_dim, ", tokens ", tokens, ")"));
  }
  return absl::OkStatus();
}

QkvRopeArgs MakeArgs(const int32_t* acc, const float* x_scales, TernaryOutputScale q_scale,
                     TernaryOutputScale k_scale, TernaryOutputScale v_scale, const QkvShape& shape,
                     const int32_t* positions, const float* cos_sin, int64_t max_positions,
                     float* q) {
  QkvRopeArgs a = {};
  a.acc = acc;
  a.x_scales = x_scales;
  a.q_mode = static_cast<int>(q_scale.mode);
  a.k_mode = static_cast<int>(k_scale.mode);
  a.v_mode = static_cast<int>(v_scale.mode);
  a.q_value = q_scale.value;
  a.k_value = k_scale.value;
  a.v_value = v_scale.value;
  a.heads = shape.heads;
  a.kv_heads = shape.kv_heads;
  a.head_dim = shape.head_dim;
  a.positions = positions;
  a.cos_sin = cos_sin;
  a.max_positions = max_positions;
  a.q = q;
  return a;
}

// About two items per thread, while the blocks stay within ~4 per SM.
dim3 Grid(const QkvShape& shape, int64_t tokens) {
  const int64_t items = static_cast<int64_t>(shape.heads + shape.kv_heads) * (shape.head_dim / 2) +
                        static_cast<int64_t>(shape.kv_heads) * shape.head_dim;
  const int64_t by_work = (items + 2 * kThreads - 1) / (2 * kThreads);
  const int64_t by_grid = 4 * GetCurrentDeviceTraits().multiprocessors / tokens;
  return dim3(static_cast<unsigned>(tokens), static_cast<unsigned>(std::clamp<int64_t>(
                                                 by_grid, 1, std::min<int64_t>(by_work, 65535))));
}

}  // namespace

std::vector<float> RopeCosSinTable(const std::vector<float>& inv_freq, int64_t max_positions,
                                   float attention_scaling) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  std::vector<float> table(2 * max_positions * half);
  for (int64_t p = 0; p < max_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // As cpu::RopeNeox: the angle rounded to float32 first, then float cos and sin.
      const float angle = static_cast<float>(p) * inv_freq[i];
      table[p * half + i] = std::cos(angle) * attention_scaling;
      table[(max_positions + p) * half + i] = std::sin(angle) * attention_scaling;
    }
  }
  return table;
}

absl::Status QkvEpilogueRope(const int32_t* acc, const float* x_scales, TernaryOutputScale q_scale,
                             TernaryOutputScale k_scale, TernaryOutputScale v_scale, int64_t tokens,
                             const QkvShape& shape, const int32_t* positions, const float* cos_sin,
                             int64_t max_positions, float* q, float* k, float* v,
                             cudaStream_t stream) {
  if (absl::Status s = ValidateQkvShape(shape, tokens, max_positions); !s.ok()) return s;
  if (tokens == 0) return absl::OkStatus();
  QkvRopeArgs a = MakeArgs(acc, x_scales, q_scale, k_scale, v_scale, shape, positions, cos_sin,
                           max_positions, q);
  a.k = k;
  a.v = v;
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(QkvEpilogueRopeKernel<false>, Grid(shape, tokens),
                                                dim3(kThreads), 0, stream, 1, a));
  return absl::OkStatus();
}

absl::Status QkvEpilogueRopeWriteBf16Kv(const int32_t* acc, const float* x_scales,
                                        TernaryOutputScale q_scale, TernaryOutputScale k_scale,
                                        TernaryOutputScale v_scale, const QkvShape& shape,
                                        const int32_t* positions, const float* cos_sin,
                                        int64_t max_positions, float* q,
                                        const AttentionBatch& batch, const PagedKvLayer& cache,
                                        cudaStream_t stream) {
  const int64_t tokens = batch.num_tokens;
  if (absl::Status s = ValidateQkvShape(shape, tokens, max_positions); !s.ok()) return s;
  RETURN_IF_ERROR(paged_attention::ValidateCache(batch, cache));
  if (cache.dtype != KvDtype::kBf16 || cache.num_kv_heads != shape.kv_heads ||
      cache.head_dim != shape.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("QkvEpilogueRopeWriteBf16Kv: the cache (", KvDtypeName(cache.dtype), ", ",
                     cache.num_kv_heads, " KV heads of ", cache.head_dim, ") is not bf16 with ",
                     shape.kv_heads, " of ", shape.head_dim));
  }
  if (tokens == 0 || batch.num_entries == 0) return absl::OkStatus();
  QkvRopeArgs a = MakeArgs(acc, x_scales, q_scale, k_scale, v_scale, shape, positions, cos_sin,
                           max_positions, q);
  a.k_cache = static_cast<__nv_bfloat16*>(cache.k);
  a.v_cache = static_cast<__nv_bfloat16*>(cache.v);
  a.dest = KvDestination::For(batch, cache);
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(QkvEpilogueRopeKernel<true>, Grid(shape, tokens),
                                                dim3(kThreads), 0, stream, 1, a));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
