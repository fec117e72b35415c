// Decode attention over the paged cache (entries with one token) and the split-KV combine; see
// paged_attention_internal.cuh for the family's files.
//
// Decode runs on CUDA cores with fp32 q. One block per (split of the context, KV head, entry)
// handles every query head of that KV head's group (up to 8 per block), so each K/V row is read
// from memory once. A key's head_dim elements are spread over a group of lanes, 8 elements each
// (16 bytes of bf16, 8 of int8, 4 of int4, plus the row's params for the quantized types), several
// keys per warp, a register double buffer of loads ahead of the math; elements are dequantized in
// registers to exactly kv_cache_format.h's values; online softmax in the log2 domain (q is
// pre-scaled by scale * log2(e)). With more than one split per entry (flash-decoding), the blocks
// write unnormalized partial outputs (plus their max and sum) to the workspace and the combine
// kernel reduces them.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention/paged_attention_internal.cuh"
#include "kernels/cuda/common/pdl.cuh"

namespace bitserve::cuda::paged_attention {
namespace {

// kGroup: query heads per block (the KV head's group, or an 8-head slice of a larger one).
template <int kHeadDim, int kGroup, KvDtype kType>
__global__ void __launch_bounds__(kDecodeWarps * 32) DecodeKernel(DecodeArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  using Chunk = KvChunk<kType>;
  using Raw = typename Chunk::Raw;
  constexpr bool kQuantized = kType != KvDtype::kBf16;
  constexpr int kChunks = kHeadDim / 8;  // 8-element pieces of a key row (16, 8 or 4 bytes)
  constexpr int kLanesPerKey = kChunks <= 4 ? 4 : (kChunks <= 8 ? 8 : 16);
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  constexpr int kUnroll = kGroup >= 8 ? 2 : 4;  // keys per lane group per batch of loads
  constexpr int kKeysPerIter = kDecodeWarps * kKeysPerWarp * kUnroll;

  const int e = blockIdx.z;
  if (e >= DeviceCount(a.device_num_entries, a.num_entries)) return;
  const int t = a.token_begin[e];
  if (a.token_begin[e + 1] - t != 1) return;  // a prefill chunk: the prefill kernel's
  const int context = a.start_position[e] + 1;
  const int begin = blockIdx.x * a.split_len;
  if (begin >= context) return;
  const int end = min(context, begin + a.split_len);
  const int kv_head = blockIdx.y / a.subgroups;
  const int sub = blockIdx.y % a.subgroups;
  const int head0 = kv_head * a.group + sub * kGroup;
  const int heads_here = min(kGroup, a.group - sub * kGroup);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int slot = lane / kLanesPerKey, chunk = lane % kLanesPerKey;
  const bool active = chunk < kChunks;

  float q[kGroup][8];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    float4 lo = make_float4(0, 0, 0, 0), hi = lo;
    if (active && g < heads_here) {
      const float* qp =
          a.q + (static_cast<int64_t>(t) * a.num_heads + head0 + g) * kHeadDim + chunk * 8;
      lo = *reinterpret_cast<const float4*>(qp);
      hi = *reinterpret_cast<const float4*>(qp + 4);
    }
    q[g][0] = lo.x * a.scale_log2, q[g][1] = lo.y * a.scale_log2;
    q[g][2] = lo.z * a.scale_log2, q[g][3] = lo.w * a.scale_log2;
    q[g][4] = hi.x * a.scale_log2, q[g][5] = hi.y * a.scale_log2;
    q[g][6] = hi.z * a.scale_log2, q[g][7] = hi.w * a.scale_log2;
  }

  const int32_t* table = a.block_tables + static_cast<int64_t>(e) * a.max_blocks_per_seq;
  constexpr int64_t kHeadBytes = KvHeadBytes(kType, kHeadDim);
  const uint8_t* k_base = a.k + kv_head * kHeadBytes + chunk * Chunk::kBytes;
  const uint8_t* v_base = a.v + kv_head * kHeadBytes + chunk * Chunk::kBytes;
  // At batch u of iteration it, the 4 warps read 4 x kKeysPerWarp consecutive keys.
  auto key_pos = [&](int it, int u) {
    return begin + ((it * kUnroll + u) * kDecodeWarps + warp) * kKeysPerWarp + slot;
  };
  // Raw chunks and (quantized types) each key's params; zeros past the split dequantize to 0, so
  // p = 0 * 0 there, never NaN.
  auto load = [&](int it, Raw(&kr)[kUnroll], Raw(&vr)[kUnroll], uint32_t(&kp)[kUnroll],
                  uint32_t(&vp)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int p = key_pos(it, u);
      kr[u] = vr[u] = Raw{};
      kp[u] = vp[u] = 0;
      if (active && p < end) {
        const int64_t row = CacheRow(table, p, a.log2_block_size);
        kr[u] = Chunk::Load(k_base + row * a.row_bytes);
        vr[u] = Chunk::Load(v_base + row * a.row_bytes);
        if constexpr (kQuantized) {
          kp[u] = Chunk::LoadParams(a.k_params, row * a.num_kv_heads + kv_head);
          vp[u] = Chunk::LoadParams(a.v_params, row * a.num_kv_heads + kv_head);
        }
      }
    }
  };

  float m[kGroup], l[kGroup], acc[kGroup][8];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0;
  }

  auto compute = [&](int it, const Raw(&kr)[kUnroll], const Raw(&vr)[kUnroll],
                     const uint32_t(&kp)[kUnroll], const uint32_t(&vp)[kUnroll]) {
    float s[kUnroll][kGroup];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      Chunk::ToFloat(kr[u], kp[u], kf);
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        float dot = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot = fmaf(q[g][i], kf[i], dot);
        s[u][g] = dot;
      }
    }
#pragma unroll
    for (int off = kLanesPerKey / 2; off > 0; off /= 2) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int g = 0; g < kGroup; ++g) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], off);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (key_pos(it, u) >= end) {
#pragma unroll
        for (int g = 0; g < kGroup; ++g) s[u][g] = -INFINITY;
      }
    }
    float vf[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) Chunk::ToFloat(vr[u], vp[u], vf[u]);
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) mx = fmaxf(mx, s[u][g]);
      if (mx == -INFINITY) continue;  // no valid key yet in this lane group
      const float corr = exp2f(m[g] - mx);
      l[g] *= corr;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= corr;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float p = exp2f(s[u][g] - mx);
        l[g] += p;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(p, vf[u][i], acc[g][i]);
      }
      m[g] = mx;
    }
  };

  const int iterations = (end - begin + kKeysPerIter - 1) / kKeysPerIter;
  Raw ka[kUnroll], va[kUnroll], kb[kUnroll], vb[kUnroll];
  uint32_t kpa[kUnroll], vpa[kUnroll], kpb[kUnroll], vpb[kUnroll];
  load(0, ka, va, kpa, vpa);
  for (int it = 0; it < iterations; it += 2) {
    if (it + 1 < iterations) load(it + 1, kb, vb, kpb, vpb);
    compute(it, ka, va, kpa, vpa);
    if (it + 1 >= iterations) break;
    if (it + 2 < iterations) load(it + 2, ka, va, kpa, vpa);
    compute(it + 1, kb, vb, kpb, vpb);
  }

  // Merge the lane groups of a warp (each saw different keys), then the warps.
#pragma unroll
  for (int off = kLanesPerKey; off < 32; off *= 2) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], off);
      const float lo = __shfl_xor_sync(0xffffffffu, l[g], off);
      float ao[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) ao[i] = __shfl_xor_sync(0xffffffffu, acc[g][i], off);
      const float mn = fmaxf(m[g], mo);
      if (mn == -INFINITY) continue;
      const float ca = exp2f(m[g] - mn), cb = exp2f(mo - mn);
      l[g] = l[g] * ca + lo * cb;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] = acc[g][i] * ca + ao[i] * cb;
      m[g] = mn;
    }
  }
  __shared__ float s_acc[kDecodeWarps][kGroup][kHeadDim];
  __shared__ float s_m[kDecodeWarps][kGroup], s_l[kDecodeWarps][kGroup];
  if (slot == 0 && active) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
#pragma unroll
      for (int i = 0; i < 8; ++i) s_acc[warp][g][chunk * 8 + i] = acc[g][i];
      if (chunk == 0) {
        s_m[warp][g] = m[g];
        s_l[warp][g] = l[g];
      }
    }
  }
  __syncthreads();
  StoreDecodeBlockResult<kHeadDim>(a, &s_acc[0][0][0], kHeadDim, &s_m[0][0], &s_l[0][0], kGroup,
                                   heads_here, head0, e, t);
}

// One block per (head, entry): out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). The block's
// 256 threads are 256 / head_dim groups that each sum a share of the splits (loads unrolled, so a
// long split list is not a chain of dependent latencies), then shared memory adds the groups.
__global__ void __launch_bounds__(kCombineThreads) CombineKernel(CombineArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  const int e = blockIdx.y, head = blockIdx.x;
  if (e >= DeviceCount(a.device_num_entries, a.num_entries)) return;
  const int t = a.token_begin[e];
  if (a.token_begin[e + 1] - t != 1) return;
  const int context = a.start_position[e] + 1;
  const int splits = min(a.num_splits, (context + a.split_len - 1) / a.split_len);
  const int64_t record0 = (static_cast<int64_t>(e) * a.num_heads + head) * a.num_splits;
  __shared__ float s_weight[kMaxSplits];
  __shared__ float s_reduce[kCombineThreads / 32];
  __shared__ float s_sum[kCombineThreads];
  constexpr int kWarps = kCombineThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  float mx = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    mx = fmaxf(mx, a.partial_ml[(record0 + s) * 2]);
  }
  for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if (lane == 0) s_reduce[warp] = mx;
  __syncthreads();
  mx = s_reduce[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) mx = fmaxf(mx, s_reduce[w]);
  __syncthreads();
  float sum = 0;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    const float w = exp2f(a.partial_ml[(record0 + s) * 2] - mx);
    s_weight[s] = w;
    sum += a.partial_ml[(record0 + s) * 2 + 1] * w;
  }
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) s_reduce[warp] = sum;
  __syncthreads();
  sum = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += s_reduce[w];
  const int groups = kCombineThreads / a.head_dim;  // head_dim <= 128: at least 2
  const int d = threadIdx.x % a.head_dim, group = threadIdx.x / a.head_dim;
  float o = 0;
  if (group < groups) {
    const float* po = a.partial_o + record0 * a.head_dim + d;
#pragma unroll 8
    for (int s = group; s < splits; s += groups) {
      o += po[static_cast<int64_t>(s) * a.head_dim] * s_weight[s];
    }
  }
  s_sum[threadIdx.x] = o;
  __syncthreads();
  if (threadIdx.x < a.head_dim) {
    for (int g = 1; g < groups; ++g) o += s_sum[g * a.head_dim + threadIdx.x];
    a.out[(static_cast<int64_t>(t) * a.num_heads + head) * a.head_dim + d] = o / sum;
  }
}

template <int kHeadDim, int kGroup, KvDtype kType>
int DecodeResidentBlocks() {
  static const int blocks = [] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, DecodeKernel<kHeadDim, kGroup, kType>,
                                                      kDecodeWarps * 32, 0) != cudaSuccess) {
      cudaGetLastError();
      n = 2;
    }
    return std::max(n, 1);
  }();
  return blocks;
}

// One instantiation per (head_dim, heads per block, dtype): Run<kHeadDim, kGroup, kType>(...)
// either launches or asks the occupancy of that kernel.
struct DecodeDispatch {
  bool launch;
  const DecodeArgs* args;
  dim3 grid;
  cudaStream_t stream;
  int resident = 0;
  template <int kHeadDim, int kGroup, KvDtype kType>
  void Run() {
    if (launch) {
      (void)LaunchDependent(DecodeKernel<kHeadDim, kGroup, kType>, grid, dim3(kDecodeWarps * 32), 0,
                            stream, 1, *args);  // the caller checks cudaGetLastError
    } else {
      resident = DecodeResidentBlocks<kHeadDim, kGroup, kType>();
    }
  }
  template <int kHeadDim, int kGroup>
  void ForDtype(KvDtype dtype) {
    switch (dtype) {
      case KvDtype::kInt8:
        return Run<kHeadDim, kGroup, KvDtype::kInt8>();
      case KvDtype::kInt4:
        return Run<kHeadDim, kGroup, KvDtype::kInt4>();
      default:
        return Run<kHeadDim, kGroup, KvDtype::kBf16>();
    }
  }
  template <int kHeadDim>
  void ForGroup(int group_per_block, KvDtype dtype) {
    switch (group_per_block) {
      case 1:
        return ForDtype<kHeadDim, 1>(dtype);
      case 2:
        return ForDtype<kHeadDim, 2>(dtype);
      case 4:
        return ForDtype<kHeadDim, 4>(dtype);
      default:
        return ForDtype<kHeadDim, 8>(dtype);
    }
  }
  void ForHeadDim(int head_dim, int group_per_block, KvDtype dtype) {
    switch (head_dim) {
      case 32:
        return ForGroup<32>(group_per_block, dtype);
      case 64:
        return ForGroup<64>(group_per_block, dtype);
      case 96:
        return ForGroup<96>(group_per_block, dtype);
      default:
        return ForGroup<128>(group_per_block, dtype);
    }
  }
};

}  // namespace

void LaunchDecode(int head_dim, int group_per_block, KvDtype dtype, const DecodeArgs& args,
                  dim3 grid, cudaStream_t stream) {
  DecodeDispatch d{true, &args, grid, stream};
  d.ForHeadDim(head_dim, group_per_block, dtype);
}

int DecodeResidentBlocksPerSm(int head_dim, int group_per_block, KvDtype dtype) {
  DecodeDispatch d{false, nullptr, dim3(), nullptr};
  d.ForHeadDim(head_dim, group_per_block, dtype);
  return d.resident;
}

void LaunchCombine(const CombineArgs& args, dim3 grid, cudaStream_t stream) {
  (void)LaunchDependent(CombineKernel, grid, dim3(kCombineThreads), 0, stream, 1,
                        args);  // the caller checks cudaGetLastError
}

}  // namespace bitserve::cuda::paged_attention
