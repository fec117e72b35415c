#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cuda/attention/hadamard_rotate.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kThreads = 256;
// Shared memory per block: whole head rows of one token, about kChunkTarget floats of them (a few
// rows, so that a decode step's one token still spreads over several blocks), at least one row.
constexpr int kChunkTarget = 1024;
constexpr int kChunkFloats = kMaxHadamardHeadDim;

struct RotateArgs {
  float* q;
  float* k;
  int num_heads, num_kv_heads, head_dim;
  int block;           // cpu::HadamardBlock(head_dim), >= 2
  float norm;          // cpu::HadamardNorm(block): the host's constant itself
  int rows_per_block;  // head rows of one token per thread block
  int num_tokens;      // grid bound
  const int32_t* device_num_tokens;
};

// Element i of the chunk of token t that starts at head row row0 (q's heads, then k's).
__device__ __forceinline__ float* Element(const RotateArgs& a, int64_t t, int row0, int i) {
  const int r = row0 + i / a.head_dim, d = i % a.head_dim;
  return r < a.num_heads ? a.q + (t * a.num_heads + r) * a.head_dim + d
                         : a.k + (t * a.num_kv_heads + (r - a.num_heads)) * a.head_dim + d;
}

// Blocks (token, chunk of head rows). The chunk's rows sit back to back in shared memory; as
// head_dim is a multiple of the Hadamard block and every butterfly group (2h elements, 2h <= the
// block) is aligned, pairs over the flat chunk never cross a Hadamard block or a row. The pairs of
// one stage are independent, so their order is free and the result is the CPU's.
__global__ void __launch_bounds__(kThreads) HadamardRotateKernel(RotateArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  __shared__ float s[kChunkFloats];
  const int64_t t = blockIdx.x;
  const int count = a.device_num_tokens != nullptr ? *a.device_num_tokens : a.num_tokens;
  if (t >= count) return;  // the whole block: no __syncthreads is skipped by part of it
  const int row0 = blockIdx.y * a.rows_per_block;
  const int rows = min(a.rows_per_block, a.num_heads + a.num_kv_heads - row0);
  const int n = rows * a.head_dim;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = *Element(a, t, row0, i);
  __syncthreads();
  for (int h = 1; h < a.block; h *= 2) {
    for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
      const int i = (p / h) * 2 * h + p % h;
      const float u = s[i], v = s[i + h];
      s[i] = __fadd_rn(u, v);
      s[i + h] = __fsub_rn(u, v);
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    *Element(a, t, row0, i) = __fmul_rn(s[i], a.norm);
}

}  // namespace

absl::Status HadamardRotateQk(float* q, float* k, int num_heads, int num_kv_heads, int head_dim,
                              const AttentionBatch& batch, cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHadamardHeadDim || num_heads < 1 || num_kv_heads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HadamardRotateQk: head_dim must be in [1, ", kMaxHadamardHeadDim,
                     "] and the head counts >= 1, got head_dim ", head_dim, ", ", num_heads,
                     " heads, ", num_kv_heads, " KV heads"));
  }
  if (batch.num_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("HadamardRotateQk: num_tokens ", batch.num_tokens, " < 0"));
  }
  const int block = cpu::HadamardBlock(head_dim);
  if (batch.num_tokens == 0 || block == 1) return absl::OkStatus();
  if (q == nullptr || k == nullptr) {
    return absl::InvalidArgumentError("HadamardRotateQk needs non-null q and k");
  }
  RotateArgs a;
  a.q = q;
  a.k = k;
  a.num_heads = num_heads;
  a.num_kv_heads = num_kv_heads;
  a.head_dim = head_dim;
  a.block = block;
  a.norm = cpu::HadamardNorm(block);
  a.rows_per_block = std::min(std::max(1, kChunkTarget / head_dim), num_heads + num_kv_heads);
  a.num_tokens = batch.num_tokens;
  a.device_num_tokens = batch.device_num_tokens;
  const int chunks = (num_heads + num_kv_heads + a.rows_per_block - 1) / a.rows_per_block;
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(
      HadamardRotateKernel, dim3(batch.num_tokens, chunks), dim3(kThreads), 0, stream, 1, a));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
