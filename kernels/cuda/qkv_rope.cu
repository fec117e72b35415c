#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/qkv_rope.cuh"
#include "kernels/cuda/ternary_kernel_common.cuh"

namespace bitserve::cuda {
namespace {

using internal::ScaleOutput;

constexpr int kThreads = 256;

// Blocks (token, part): a token's items, the (head, i < half) pairs of q and k and then the v
// elements, are spread over gridDim.y blocks. One block per token (1024 threads) was 6.7 us at
// one llama-70b token (5,632 items) on an H200; few tokens now get several blocks each.
__global__ void __launch_bounds__(kThreads)
    QkvEpilogueRopeKernel(const int32_t* __restrict__ acc, const float* __restrict__ x_scales,
                          int q_mode, float q_value, int k_mode, float k_value, int v_mode,
                          float v_value, int heads, int kv_heads, int head_dim,
                          const int32_t* __restrict__ positions, const float* __restrict__ cos_sin,
                          int64_t max_positions, float* __restrict__ q, float* __restrict__ k,
                          float* __restrict__ v) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  const int qd = heads * head_dim, kvd = kv_heads * head_dim;
  const int32_t* row = acc + t * (qd + 2 * kvd);
  const float xs = x_scales[t];
  const int64_t pos = positions[t];
  const float* cos_row = cos_sin + pos * half;
  const float* sin_row = cos_sin + (max_positions + pos) * half;
  const int pairs = (heads + kv_heads) * half;
  const int stride = gridDim.y * blockDim.x;
  const int first = blockIdx.y * blockDim.x + threadIdx.x;
  for (int p = first; p < pairs + kvd; p += stride) {
    if (p >= pairs) {
      const int e = p - pairs;
      v[t * kvd + e] = ScaleOutput(row[qd + kvd + e], xs, v_mode, v_value);
      continue;
    }
    const int h = p / half, i = p % half;
    const bool is_q = h < heads;
    const int col = (is_q ? h : h - heads) * head_dim + i;  // within q or k
    const int32_t* src = is_q ? row : row + qd;
    const int mode = is_q ? q_mode : k_mode;
    const float value = is_q ? q_value : k_value;
    const float a = ScaleOutput(src[col], xs, mode, value);
    const float b = ScaleOutput(src[col + half], xs, mode, value);
    const float c = __ldg(cos_row + i), s = __ldg(sin_row + i);
    float* dst = is_q ? q + t * qd : k + t * kvd;
    dst[col] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    dst[col + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

}  // namespace

std::vector<float> RopeCosSinTable(const std::vector<float>& inv_freq, int64_t max_positions) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  std::vector<float> table(2 * max_positions * half);
  for (int64_t p = 0; p < max_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // As cpu::RopeNeox: the angle rounded to float32 first, then float cos and sin.
      const float angle = static_cast<float>(p) * inv_freq[i];
      table[p * half + i] = std::cos(angle);
      table[(max_positions + p) * half + i] = std::sin(angle);
    }
  }
  return table;
}

absl::Status QkvEpilogueRope(const int32_t* acc, const float* x_scales, TernaryOutputScale q_scale,
                             TernaryOutputScale k_scale, TernaryOutputScale v_scale, int64_t tokens,
                             const QkvShape& shape, const int32_t* positions, const float* cos_sin,
                             int64_t max_positions, float* q, float* k, float* v,
                             cudaStream_t stream) {
  if (shape.heads <= 0 || shape.kv_heads <= 0 || shape.head_dim <= 0 || shape.head_dim % 2 != 0 ||
      max_positions <= 0 || tokens < 0 || tokens > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("QkvEpilogueRope: bad shape (heads ", shape.heads, ", kv_heads ",
                     shape.kv_heads, ", head_dim ", shape.head_dim, ", tokens ", tokens, ")"));
  }
  if (tokens == 0) return absl::OkStatus();
  // About two items per thread, while the blocks stay within ~4 per SM.
  const int64_t items = static_cast<int64_t>(shape.heads + shape.kv_heads) * (shape.head_dim / 2) +
                        static_cast<int64_t>(shape.kv_heads) * shape.head_dim;
  const int64_t by_work = (items + 2 * kThreads - 1) / (2 * kThreads);
  const int64_t by_grid = 4 * GetCurrentDeviceTraits().multiprocessors / tokens;
  const dim3 grid(
      static_cast<unsigned>(tokens),
      static_cast<unsigned>(std::clamp<int64_t>(by_grid, 1, std::min<int64_t>(by_work, 65535))));
  BITSERVE_CUDA_RETURN_IF_ERROR(
      LaunchDependent(QkvEpilogueRopeKernel, grid, dim3(kThreads), 0, stream, 1, acc, x_scales,
                      static_cast<int>(q_scale.mode), q_scale.value, static_cast<int>(k_scale.mode),
                      k_scale.value, static_cast<int>(v_scale.mode), v_scale.value, shape.heads,
                      shape.kv_heads, shape.head_dim, positions, cos_sin, max_positions, q, k, v));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
