// Paged attention kernels; the cache layout and the batch description are drawn in
// paged_attention.cuh. Three kernels:
//
//  - decode (entries with one token): CUDA cores, fp32 q. One block per (split of the context,
//    KV head, entry) handles every query head of that KV head's group (up to 8 per block), so each
//    K/V row is read from memory once. A key's head_dim bf16 values are spread over a group of
//    lanes (16 bytes each), several keys per warp, a register double buffer of loads ahead of the
//    math; online softmax in the log2 domain (q is pre-scaled by scale * log2(e)). With more than
//    one split per entry (flash-decoding), the blocks write unnormalized partial outputs (plus
//    their max and sum) to the workspace and a second kernel combines them.
//  - combine: the split-KV reduction.
//  - prefill (entries with two or more tokens): tensor cores (mma.sync m16n8k16 bf16, fp32
//    accumulators). A block owns 64 rows = (token, query head) pairs of one KV head's group
//    (GQA packing: 64 / group tokens x group heads), so every K/V tile it loads serves all heads of
//    the group. K/V tiles of 64 keys come from the paged cache through cp.async into a double
//    buffer. q and the softmax weights p are split into hi + lo bf16 (two MMAs each), so the only
//    rounding that reaches the result beyond fp32 is ~2^-17 relative (see paged_attention_options).
//
// Graph safety: grids are sized from the host bounds; every kernel reads the true entry / token
// counts from the device (device_num_* when given) and returns early past them.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/paged_attention.cuh"
#include "kernels/cuda/paged_attention_options.cuh"

namespace bitserve::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxSplits = 256;
// Workspace records (one per entry and split, each num_heads x (head_dim + 2) floats): enough for
// ~8 blocks per SM at batch 1 (128K context: 5 KV heads x ~200 splits) without sizing the
// workspace by max_tokens x max splits (gigabytes for a 4096-token bucket).
constexpr int kMaxSplitRecords = 2048;
constexpr int kDecodeWarps = 4;
constexpr int kPrefillRows = 64;       // (token, head) rows per prefill block: 4 warps x 16
constexpr int kPrefillKeys = 64;       // keys per K/V tile

__device__ __forceinline__ int DeviceCount(const int32_t* device_count, int host_count) {
  return device_count != nullptr ? *device_count : host_count;
}

// Cache row (position `p` of the sequence whose block table is `table`) in units of rows.
__device__ __forceinline__ int64_t CacheRow(const int32_t* table, int p, int log2_block_size) {
  return (static_cast<int64_t>(__ldg(table + (p >> log2_block_size))) << log2_block_size) +
         (p & ((1 << log2_block_size) - 1));
}

__device__ __forceinline__ void Bf16x8ToFloat(const uint4& u, float (&f)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// ---- WritePagedKv ---------------------------------------------------------------------------

struct WriteArgs {
  const float* k;
  const float* v;
  __nv_bfloat16* k_cache;
  __nv_bfloat16* v_cache;
  const int32_t* token_begin;
  const int32_t* start_position;
  const int32_t* token_entry;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int num_blocks;
  int log2_block_size;
  int row_width;  // num_kv_heads * head_dim
  int num_tokens;
  const int32_t* device_num_tokens;
};

// One block per token: its K and V rows (num_kv_heads * head_dim floats each) to one cache row.
__global__ void __launch_bounds__(128) WritePagedKvKernel(WriteArgs a) {
  const int t = blockIdx.x;
  if (t >= DeviceCount(a.device_num_tokens, a.num_tokens)) return;
  const int e = a.token_entry[t];
  const int p = a.start_position[e] + t - a.token_begin[e];
  const int block_index = p >> a.log2_block_size;
  if (p < 0 || block_index >= a.max_blocks_per_seq) return;  // the engine's bug; never write wild
  const int block = a.block_tables[static_cast<int64_t>(e) * a.max_blocks_per_seq + block_index];
  if (block < 0 || block >= a.num_blocks) return;
  const int64_t row = (static_cast<int64_t>(block) << a.log2_block_size) +
                      (p & ((1 << a.log2_block_size) - 1));
  const int64_t src = static_cast<int64_t>(t) * a.row_width;
  const int64_t dst = row * a.row_width;
  for (int i = threadIdx.x * 4; i < a.row_width; i += blockDim.x * 4) {
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
    *reinterpret_cast<uint2*>(a.k_cache + dst + i) = ku;
    *reinterpret_cast<uint2*>(a.v_cache + dst + i) = vu;
  }
}

// ---- decode ---------------------------------------------------------------------------------

struct DecodeArgs {
  const float* q;
  float* out;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int32_t* token_begin;
  const int32_t* start_position;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int num_entries;
  const int32_t* device_num_entries;
  int num_heads, num_kv_heads, group, subgroups;
  int log2_block_size;
  float scale_log2;
  int num_splits, split_len;
  float* partial_o;   // [entry][head][split][head_dim], when num_splits > 1
  float* partial_ml;  // [entry][head][split][2]: max (log2 domain), sum
};

// kGroup: query heads per block (the KV head's group, or an 8-head slice of a larger one).
template <int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kDecodeWarps * 32) DecodeKernel(DecodeArgs a) {
  constexpr int kChunks = kHeadDim / 8;  // 16-byte pieces of a key row
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
      const float* qp = a.q + (static_cast<int64_t>(t) * a.num_heads + head0 + g) * kHeadDim +
                        chunk * 8;
      lo = *reinterpret_cast<const float4*>(qp);
      hi = *reinterpret_cast<const float4*>(qp + 4);
    }
    q[g][0] = lo.x * a.scale_log2, q[g][1] = lo.y * a.scale_log2;
    q[g][2] = lo.z * a.scale_log2, q[g][3] = lo.w * a.scale_log2;
    q[g][4] = hi.x * a.scale_log2, q[g][5] = hi.y * a.scale_log2;
    q[g][6] = hi.z * a.scale_log2, q[g][7] = hi.w * a.scale_log2;
  }

  const int32_t* table = a.block_tables + static_cast<int64_t>(e) * a.max_blocks_per_seq;
  const int64_t row_width = static_cast<int64_t>(a.num_kv_heads) * kHeadDim;
  const __nv_bfloat16* k_base = a.k + kv_head * kHeadDim + chunk * 8;
  const __nv_bfloat16* v_base = a.v + kv_head * kHeadDim + chunk * 8;
  // At batch u of iteration it, the 4 warps read 4 x kKeysPerWarp consecutive keys.
  auto key_pos = [&](int it, int u) {
    return begin + ((it * kUnroll + u) * kDecodeWarps + warp) * kKeysPerWarp + slot;
  };
  auto load = [&](int it, uint4(&kr)[kUnroll], uint4(&vr)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int p = key_pos(it, u);
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);  // zeros past the split: p = 0 * 0, never NaN
      if (active && p < end) {
        const int64_t off = CacheRow(table, p, a.log2_block_size) * row_width;
        kr[u] = __ldcs(reinterpret_cast<const uint4*>(k_base + off));
        vr[u] = __ldcs(reinterpret_cast<const uint4*>(v_base + off));
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

  auto compute = [&](int it, const uint4(&kr)[kUnroll], const uint4(&vr)[kUnroll]) {
    float s[kUnroll][kGroup];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      Bf16x8ToFloat(kr[u], kf);
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
    for (int u = 0; u < kUnroll; ++u) Bf16x8ToFloat(vr[u], vf[u]);
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
  uint4 ka[kUnroll], va[kUnroll], kb[kUnroll], vb[kUnroll];
  load(0, ka, va);
  for (int it = 0; it < iterations; it += 2) {
    if (it + 1 < iterations) load(it + 1, kb, vb);
    compute(it, ka, va);
    if (it + 1 >= iterations) break;
    if (it + 2 < iterations) load(it + 2, ka, va);
    compute(it + 1, kb, vb);
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
  for (int idx = threadIdx.x; idx < heads_here * kHeadDim; idx += kDecodeWarps * 32) {
    const int g = idx / kHeadDim, d = idx % kHeadDim;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, s_m[w][g]);  // finite: key `begin`
    float sum = 0, o = 0;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float c = exp2f(s_m[w][g] - mx);
      sum += s_l[w][g] * c;
      o += s_acc[w][g][d] * c;
    }
    const int head = head0 + g;
    if (a.num_splits == 1) {
      a.out[(static_cast<int64_t>(t) * a.num_heads + head) * kHeadDim + d] = o / sum;
    } else {
      const int64_t record = (static_cast<int64_t>(e) * a.num_heads + head) * a.num_splits +
                             blockIdx.x;
      a.partial_o[record * kHeadDim + d] = o;
      if (d == 0) {
        a.partial_ml[record * 2] = mx;
        a.partial_ml[record * 2 + 1] = sum;
      }
    }
  }
}

struct CombineArgs {
  const float* partial_o;
  const float* partial_ml;
  float* out;
  const int32_t* token_begin;
  const int32_t* start_position;
  int num_entries;
  const int32_t* device_num_entries;
  int num_heads, head_dim, num_splits, split_len;
};

// One block per (head, entry): out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). The block's
// 256 threads are 256 / head_dim groups that each sum a share of the splits (loads unrolled, so a
// long split list is not a chain of dependent latencies), then shared memory adds the groups.
constexpr int kCombineThreads = 256;
__global__ void __launch_bounds__(kCombineThreads) CombineKernel(CombineArgs a) {
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

// ---- prefill --------------------------------------------------------------------------------

struct PrefillArgs {
  const float* q;
  float* out;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int32_t* token_begin;
  const int32_t* start_position;
  const int32_t* token_entry;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int num_tokens;
  const int32_t* device_num_tokens;
  int num_heads, num_kv_heads, group, tokens_per_tile;
  int log2_block_size;
  float scale_log2;
};

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; src_bytes 0 writes zeros (keys past the last position).
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)),
               "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(p)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(p)));
}

// c += a (16x16, row) * b (16x8, col); bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// x = hi + lo with hi = bf16(x), lo = bf16(x - hi): ~16 significant bits.
__device__ __forceinline__ void SplitPack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  hi = *reinterpret_cast<const uint32_t*>(&h);
  lo = PackBf16(x0 - __low2float(h), x1 - __high2float(h));
}

template <int kHeadDim, bool kSplit>
constexpr int PrefillSharedBytes() {
  return ((kSplit ? 2 : 1) * kPrefillRows + 4 * kPrefillKeys) * (kHeadDim + 8) * 2;
}

// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4 g + t; A regs: (row g | g+8) x (cols 2t,
// 2t+1 | 2t+8, 2t+9); B regs: k rows 2t, 2t+1 | 2t+8, 2t+9 at column g; C: rows g | g+8, columns
// 2t, 2t+1. The S accumulators of two adjacent 8-key tiles are exactly the A fragment of P for
// 16 keys, so P never leaves registers.
template <int kHeadDim, bool kSplit>
__global__ void __launch_bounds__(128, 2) PrefillKernel(PrefillArgs a) {
  constexpr int kStride = kHeadDim + 8;  // bf16 per shared row; +16 bytes: conflict-free ldmatrix
  constexpr int kDimSteps = kHeadDim / 16;
  constexpr int kDimTiles = kHeadDim / 8;
  constexpr int kKeyTiles = kPrefillKeys / 8;
  constexpr int kQPlanes = kSplit ? 2 : 1;
  constexpr int kChunksPerRow = kHeadDim / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem);  // [kQPlanes][64][kStride]
  __nv_bfloat16* sk = sq + kQPlanes * kPrefillRows * kStride;   // [2][64][kStride]
  __nv_bfloat16* sv = sk + 2 * kPrefillKeys * kStride;          // [2][64][kStride]

  const int num_tokens = DeviceCount(a.device_num_tokens, a.num_tokens);
  const int tile = gridDim.x - 1 - blockIdx.x;  // later tokens (more keys) start first
  const int tok0 = tile * a.tokens_per_tile;
  if (tok0 >= num_tokens) return;
  const int tok_end = min(tok0 + a.tokens_per_tile, num_tokens);
  const int kv_head = blockIdx.y;
  const int G = a.group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t row_width = static_cast<int64_t>(a.num_kv_heads) * kHeadDim;

  const int e_first = a.token_entry[tok0], e_last = a.token_entry[tok_end - 1];
  for (int e = e_first; e <= e_last; ++e) {
    const int tb0 = a.token_begin[e], tb1 = a.token_begin[e + 1];
    if (tb1 - tb0 < 2) continue;  // decode entries: the decode kernel's
    const int ta = max(tok0, tb0), tb = min(tok_end, tb1);
    if (ta >= tb) continue;
    const int pos_offset = a.start_position[e] - tb0;  // position of token x: pos_offset + x
    const int pos_hi = pos_offset + tb - 1;
    const int32_t* table = a.block_tables + static_cast<int64_t>(e) * a.max_blocks_per_seq;
    __syncthreads();  // the previous entry's pass is done with shared memory

    // Q rows (token-major, heads of the group inner), pre-scaled, as bf16 hi (+ lo).
    for (int idx = threadIdx.x; idx < kPrefillRows * (kHeadDim / 4); idx += 128) {
      const int r = idx / (kHeadDim / 4), c = (idx % (kHeadDim / 4)) * 4;
      const int token = tok0 + r / G;
      float4 x = make_float4(0, 0, 0, 0);
      if (r < a.tokens_per_tile * G && token >= ta && token < tb) {
        x = *reinterpret_cast<const float4*>(
            a.q + (static_cast<int64_t>(token) * a.num_heads + kv_head * G + r % G) * kHeadDim + c);
        x.x *= a.scale_log2, x.y *= a.scale_log2, x.z *= a.scale_log2, x.w *= a.scale_log2;
      }
      uint2 hi, lo;
      SplitPack(x.x, x.y, hi.x, lo.x);
      SplitPack(x.z, x.w, hi.y, lo.y);
      *reinterpret_cast<uint2*>(sq + r * kStride + c) = hi;
      if constexpr (kSplit) *reinterpret_cast<uint2*>(sq + (kPrefillRows + r) * kStride + c) = lo;
    }

    // This lane's two rows: positions (-1: not a row of this entry; fully masked, not stored).
    int row_pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = warp * 16 + g + 8 * h;
      const int token = tok0 + r / G;
      row_pos[h] = (r < a.tokens_per_tile * G && token >= ta && token < tb) ? pos_offset + token
                                                                              : -1;
    }
    int warp_min = min(row_pos[0] < 0 ? INT_MAX : row_pos[0],
                       row_pos[1] < 0 ? INT_MAX : row_pos[1]);
    int warp_max = max(row_pos[0], row_pos[1]);
    warp_min = __reduce_min_sync(0xffffffffu, warp_min);
    warp_max = __reduce_max_sync(0xffffffffu, warp_max);

    auto load_tile = [&](int j, int buf) {
      __nv_bfloat16* dk = sk + buf * kPrefillKeys * kStride;
      __nv_bfloat16* dv = sv + buf * kPrefillKeys * kStride;
      for (int c = threadIdx.x; c < kPrefillKeys * kChunksPerRow; c += 128) {
        const int key = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
        const int p = j * kPrefillKeys + key;
        const __nv_bfloat16* src_k = a.k;
        const __nv_bfloat16* src_v = a.v;
        int bytes = 0;
        if (p <= pos_hi) {
          const int64_t off = CacheRow(table, p, a.log2_block_size) * row_width +
                              kv_head * kHeadDim + col;
          src_k += off;
          src_v += off;
          bytes = 16;
        }
        CpAsync16(dk + key * kStride + col, src_k, bytes);
        CpAsync16(dv + key * kStride + col, src_v, bytes);
      }
      CpAsyncCommit();
    };

    float o[kDimTiles][4];
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};

    const int num_kv_tiles = pos_hi / kPrefillKeys + 1;
    load_tile(0, 0);
    for (int j = 0; j < num_kv_tiles; ++j) {
      if (j + 1 < num_kv_tiles) {
        load_tile(j + 1, (j + 1) & 1);
        CpAsyncWait<1>();
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();
      const int k0 = j * kPrefillKeys;
      if (k0 <= warp_max) {
        const __nv_bfloat16* tk = sk + (j & 1) * kPrefillKeys * kStride;
        const __nv_bfloat16* tv = sv + (j & 1) * kPrefillKeys * kStride;
        float s[kKeyTiles][4];
#pragma unroll
        for (int i = 0; i < kKeyTiles; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0;
#pragma unroll
        for (int ks = 0; ks < kDimSteps; ++ks) {
          const int q_off = (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + ks * 16 +
                            (lane >> 4) * 8;
          uint32_t qa[4], ql[4];
          LdMatrixX4(qa, sq + q_off);
          if constexpr (kSplit) LdMatrixX4(ql, sq + kPrefillRows * kStride + q_off);
#pragma unroll
          for (int np = 0; np < kKeyTiles / 2; ++np) {
            uint32_t kb[4];
            LdMatrixX4(kb, tk + (np * 16 + (lane & 7) + (lane >> 4) * 8) * kStride + ks * 16 +
                               ((lane >> 3) & 1) * 8);
            Mma(s[2 * np], qa, kb[0], kb[1]);
            Mma(s[2 * np + 1], qa, kb[2], kb[3]);
            if constexpr (kSplit) {
              Mma(s[2 * np], ql, kb[0], kb[1]);
              Mma(s[2 * np + 1], ql, kb[2], kb[3]);
            }
          }
        }
        if (k0 + kPrefillKeys - 1 > warp_min) {  // causal mask (and rows of other entries)
#pragma unroll
          for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              if (k0 + nt * 8 + 2 * t4 + (i & 1) > row_pos[i >> 1]) s[nt][i] = -INFINITY;
            }
          }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < kKeyTiles; ++nt) {
            mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
          }
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m[h], mx);
          const float base = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet
          const float corr = exp2f(m[h] - base);
          m[h] = m_new;
          float sum = 0;
#pragma unroll
          for (int nt = 0; nt < kKeyTiles; ++nt) {
            s[nt][2 * h] = exp2f(s[nt][2 * h] - base);
            s[nt][2 * h + 1] = exp2f(s[nt][2 * h + 1] - base);
            sum += s[nt][2 * h] + s[nt][2 * h + 1];
          }
          l[h] = l[h] * corr + sum;  // this lane's columns; the quad is summed at the end
#pragma unroll
          for (int dn = 0; dn < kDimTiles; ++dn) {
            o[dn][2 * h] *= corr;
            o[dn][2 * h + 1] *= corr;
          }
        }
#pragma unroll
        for (int kk = 0; kk < kKeyTiles / 2; ++kk) {
          uint32_t pa[4], pl[4];
          SplitPack(s[2 * kk][0], s[2 * kk][1], pa[0], pl[0]);
          SplitPack(s[2 * kk][2], s[2 * kk][3], pa[1], pl[1]);
          SplitPack(s[2 * kk + 1][0], s[2 * kk + 1][1], pa[2], pl[2]);
          SplitPack(s[2 * kk + 1][2], s[2 * kk + 1][3], pa[3], pl[3]);
#pragma unroll
          for (int dp = 0; dp < kDimSteps; ++dp) {
            uint32_t vb[4];
            LdMatrixX4Trans(vb, tv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride +
                                    dp * 16 + (lane >> 4) * 8);
            Mma(o[2 * dp], pa, vb[0], vb[1]);
            Mma(o[2 * dp + 1], pa, vb[2], vb[3]);
            if constexpr (kSplit) {
              Mma(o[2 * dp], pl, vb[0], vb[1]);
              Mma(o[2 * dp + 1], pl, vb[2], vb[3]);
            }
          }
        }
      }
      __syncthreads();  // the buffer just read is the next load's target
    }

#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if (row_pos[h] < 0) continue;
      const int r = warp * 16 + g + 8 * h;
      const int token = tok0 + r / G;
      const float inv = 1.0f / sum;
      float* dst = a.out + (static_cast<int64_t>(token) * a.num_heads + kv_head * G + r % G) *
                               kHeadDim + 2 * t4;
#pragma unroll
      for (int dn = 0; dn < kDimTiles; ++dn) {
        *reinterpret_cast<float2*>(dst + dn * 8) = make_float2(o[dn][2 * h] * inv,
                                                               o[dn][2 * h + 1] * inv);
      }
    }
  }
}

// ---- host side ------------------------------------------------------------------------------

int Log2(int x) {
  int l = 0;
  while ((1 << l) < x) ++l;
  return l;
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int MaxSplitsFor(int max_context) {
  return std::min(kMaxSplits, (max_context + kPagedAttentionMinSplitKeys - 1) /
                                  kPagedAttentionMinSplitKeys);
}

int MultiprocessorCount() {
  int device = 0, count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return 132;
  }
  return count;
}

absl::Status ValidateBatch(const AttentionBatch& batch, const PagedKvLayer& cache) {
  if (cache.k == nullptr || cache.v == nullptr) return absl::InvalidArgumentError("null KV cache");
  if (cache.block_size < 1 || cache.block_size > 4096 ||
      (cache.block_size & (cache.block_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block_size must be a power of two, got ", cache.block_size));
  }
  if (cache.head_dim != 32 && cache.head_dim != 64 && cache.head_dim != 96 &&
      cache.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged attention supports head_dim 32, 64, 96, 128; got ", cache.head_dim));
  }
  if (cache.num_kv_heads < 1 || cache.num_blocks < 1) {
    return absl::InvalidArgumentError("KV cache without heads or blocks");
  }
  if (batch.num_entries < 0 || batch.num_tokens < 0 || batch.num_entries > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention batch bounds out of range: ", batch.num_entries, " entries, ",
                     batch.num_tokens, " tokens"));
  }
  if (batch.num_entries > 0 &&
      (batch.token_begin == nullptr || batch.start_position == nullptr ||
       batch.token_entry == nullptr || batch.block_tables == nullptr ||
       batch.max_blocks_per_seq < 1 || batch.max_context < 1)) {
    return absl::InvalidArgumentError("attention batch arrays or bounds missing");
  }
  return absl::OkStatus();
}

// Decode blocks one SM holds at once (registers bound it: ~170 per thread at 4 heads per block).
template <int kHeadDim, int kGroup>
int DecodeResidentBlocks() {
  static const int blocks = [] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, DecodeKernel<kHeadDim, kGroup>,
                                                      kDecodeWarps * 32, 0) != cudaSuccess) {
      cudaGetLastError();
      n = 2;
    }
    return std::max(n, 1);
  }();
  return blocks;
}

template <int kHeadDim>
int DecodeResidentBlocksForGroup(int group_per_block) {
  switch (group_per_block) {
    case 1: return DecodeResidentBlocks<kHeadDim, 1>();
    case 2: return DecodeResidentBlocks<kHeadDim, 2>();
    case 4: return DecodeResidentBlocks<kHeadDim, 4>();
    default: return DecodeResidentBlocks<kHeadDim, 8>();
  }
}

int DecodeResidentBlocksPerSm(int head_dim, int group_per_block) {
  switch (head_dim) {
    case 32: return DecodeResidentBlocksForGroup<32>(group_per_block);
    case 64: return DecodeResidentBlocksForGroup<64>(group_per_block);
    case 96: return DecodeResidentBlocksForGroup<96>(group_per_block);
    default: return DecodeResidentBlocksForGroup<128>(group_per_block);
  }
}

template <int kHeadDim, int kGroup>
void LaunchDecode(const DecodeArgs& args, dim3 grid, cudaStream_t stream) {
  DecodeKernel<kHeadDim, kGroup><<<grid, kDecodeWarps * 32, 0, stream>>>(args);
}

template <int kHeadDim>
void LaunchDecodeForGroup(int group_per_block, const DecodeArgs& args, dim3 grid,
                          cudaStream_t stream) {
  switch (group_per_block) {
    case 1: return LaunchDecode<kHeadDim, 1>(args, grid, stream);
    case 2: return LaunchDecode<kHeadDim, 2>(args, grid, stream);
    case 4: return LaunchDecode<kHeadDim, 4>(args, grid, stream);
    default: return LaunchDecode<kHeadDim, 8>(args, grid, stream);
  }
}

template <int kHeadDim, bool kSplit>
absl::Status LaunchPrefill(const PrefillArgs& args, dim3 grid, cudaStream_t stream) {
  constexpr int kBytes = PrefillSharedBytes<kHeadDim, kSplit>();
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      PrefillKernel<kHeadDim, kSplit>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  PrefillKernel<kHeadDim, kSplit><<<grid, 128, kBytes, stream>>>(args);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <int kHeadDim>
absl::Status LaunchPrefillForHeadDim(bool split, const PrefillArgs& args, dim3 grid,
                                     cudaStream_t stream) {
  return split ? LaunchPrefill<kHeadDim, true>(args, grid, stream)
               : LaunchPrefill<kHeadDim, false>(args, grid, stream);
}

}  // namespace

absl::Status WritePagedKv(const float* k, const float* v, const AttentionBatch& batch,
                          const PagedKvLayer& cache, cudaStream_t stream) {
  if (auto status = ValidateBatch(batch, cache); !status.ok()) return status;
  if (batch.num_tokens == 0 || batch.num_entries == 0) return absl::OkStatus();
  if (k == nullptr || v == nullptr || !Aligned16(k) || !Aligned16(v) ||
      !Aligned16(cache.k) || !Aligned16(cache.v)) {
    return absl::InvalidArgumentError("WritePagedKv needs non-null 16-byte aligned k, v, cache");
  }
  WriteArgs a;
  a.k = k;
  a.v = v;
  a.k_cache = cache.k;
  a.v_cache = cache.v;
  a.token_begin = batch.token_begin;
  a.start_position = batch.start_position;
  a.token_entry = batch.token_entry;
  a.block_tables = batch.block_tables;
  a.max_blocks_per_seq = batch.max_blocks_per_seq;
  a.num_blocks = cache.num_blocks;
  a.log2_block_size = Log2(cache.block_size);
  a.row_width = cache.num_kv_heads * cache.head_dim;
  a.num_tokens = batch.num_tokens;
  a.device_num_tokens = batch.device_num_tokens;
  WritePagedKvKernel<<<batch.num_tokens, 128, 0, stream>>>(a);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

size_t PagedAttentionWorkspaceBytes(int max_tokens, int num_heads, int head_dim,
                                    int max_context) {
  const int splits = MaxSplitsFor(max_context);
  if (splits <= 1 || max_tokens <= 0 || num_heads <= 0 || head_dim <= 0) return 0;
  const int64_t records =
      std::min<int64_t>(kMaxSplitRecords, static_cast<int64_t>(max_tokens) * splits);
  return static_cast<size_t>(records) * num_heads * (head_dim + 2) * sizeof(float);
}

absl::Status PagedAttention(const float* q, const AttentionBatch& batch, const PagedKvLayer& cache,
                            int num_heads, float scale, float* out, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream) {
  return PagedAttentionWithOptions(q, batch, cache, num_heads, scale, out, workspace,
                                   workspace_bytes, PagedAttentionOptions{}, stream);
}

absl::Status PagedAttentionWithOptions(const float* q, const AttentionBatch& batch,
                                       const PagedKvLayer& cache, int num_heads, float scale,
                                       float* out, void* workspace, size_t workspace_bytes,
                                       const PagedAttentionOptions& options, cudaStream_t stream) {
  if (auto status = ValidateBatch(batch, cache); !status.ok()) return status;
  if (num_heads < 1 || num_heads % cache.num_kv_heads != 0 ||
      num_heads / cache.num_kv_heads > kPrefillRows) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads ", num_heads, " must be a multiple of num_kv_heads ",
                     cache.num_kv_heads, " with at most ", kPrefillRows, " per KV head"));
  }
  if (batch.num_tokens == 0 || batch.num_entries == 0) return absl::OkStatus();
  if (q == nullptr || out == nullptr || !Aligned16(q) || !Aligned16(out) ||
      !Aligned16(cache.k) || !Aligned16(cache.v)) {
    return absl::InvalidArgumentError(
        "PagedAttention needs non-null 16-byte aligned q, out, cache");
  }
  const int head_dim = cache.head_dim;
  const int group = num_heads / cache.num_kv_heads;
  const int log2_block_size = Log2(cache.block_size);
  const int entries = batch.num_entries;

  // Decode: one block per (split, KV head x head slice, entry).
  const int group_per_block = group >= 8 ? 8 : (group > 4 ? 8 : (group > 2 ? 4 : group));
  const int subgroups = (group + group_per_block - 1) / group_per_block;
  const int kv_blocks = cache.num_kv_heads * subgroups;
  int splits = MaxSplitsFor(batch.max_context);
  if (options.decode_splits > 0) {
    splits = std::min(splits, options.decode_splits);
  } else {
    // Little work per SM slot (batch 1): one wave, the most splits whose blocks all fit at once,
    // so each block pays its start-up latency (q, block table, first loads) once and no partial
    // second wave idles SMs. Much work: ~2.7 waves of blocks of >= 2048 keys, which keeps every
    // slot busy and makes the last wave's tail small (measured on the H100: at batch 16 and 64,
    // 32K-128K, 7-13% faster than one wave; at batch 1, 32K-128K, 10-23% slower).
    const int64_t resident = static_cast<int64_t>(MultiprocessorCount()) *
                             DecodeResidentBlocksPerSm(head_dim, group_per_block);
    const int64_t per_split = static_cast<int64_t>(entries) * kv_blocks;
    const int64_t one_wave = std::max<int64_t>(1, resident / per_split);
    const int64_t many_waves = std::min<int64_t>((resident * 8 / 3 + per_split - 1) / per_split,
                                                 batch.max_context / 2048);
    splits = static_cast<int>(std::min<int64_t>(splits, std::max(one_wave, many_waves)));
  }
  const int64_t record_bytes = static_cast<int64_t>(num_heads) * (head_dim + 2) * sizeof(float);
  splits = static_cast<int>(std::min<int64_t>(
      {splits, kMaxSplitRecords / entries,
       workspace == nullptr ? 1 : static_cast<int64_t>(workspace_bytes) / record_bytes / entries}));
  splits = std::max(splits, 1);
  int split_len = (batch.max_context + splits - 1) / splits;
  split_len = (split_len + 31) / 32 * 32;
  splits = (batch.max_context + split_len - 1) / split_len;

  DecodeArgs d;
  d.q = q;
  d.out = out;
  d.k = cache.k;
  d.v = cache.v;
  d.token_begin = batch.token_begin;
  d.start_position = batch.start_position;
  d.block_tables = batch.block_tables;
  d.max_blocks_per_seq = batch.max_blocks_per_seq;
  d.num_entries = entries;
  d.device_num_entries = batch.device_num_entries;
  d.num_heads = num_heads;
  d.num_kv_heads = cache.num_kv_heads;
  d.group = group;
  d.subgroups = subgroups;
  d.log2_block_size = log2_block_size;
  d.scale_log2 = scale * kLog2e;
  d.num_splits = splits;
  d.split_len = split_len;
  // Partial outputs first, then (max, sum) pairs; both 16-byte aligned (head_dim % 16 == 0).
  d.partial_o = static_cast<float*>(workspace);
  d.partial_ml = splits > 1 ? d.partial_o + static_cast<int64_t>(entries) * num_heads * splits *
                                                head_dim
                            : nullptr;
  const dim3 decode_grid(splits, kv_blocks, entries);
  switch (head_dim) {
    case 32: LaunchDecodeForGroup<32>(group_per_block, d, decode_grid, stream); break;
    case 64: LaunchDecodeForGroup<64>(group_per_block, d, decode_grid, stream); break;
    case 96: LaunchDecodeForGroup<96>(group_per_block, d, decode_grid, stream); break;
    default: LaunchDecodeForGroup<128>(group_per_block, d, decode_grid, stream); break;
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (splits > 1) {
    CombineArgs c;
    c.partial_o = d.partial_o;
    c.partial_ml = d.partial_ml;
    c.out = out;
    c.token_begin = batch.token_begin;
    c.start_position = batch.start_position;
    c.num_entries = entries;
    c.device_num_entries = batch.device_num_entries;
    c.num_heads = num_heads;
    c.head_dim = head_dim;
    c.num_splits = splits;
    c.split_len = split_len;
    CombineKernel<<<dim3(num_heads, entries), kCombineThreads, 0, stream>>>(c);
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }

  // Prefill: one block per (tile of 64 / group tokens of the flattened batch, KV head).
  if (batch.max_prefill_tokens == 0) return absl::OkStatus();
  PrefillArgs p;
  p.q = q;
  p.out = out;
  p.k = cache.k;
  p.v = cache.v;
  p.token_begin = batch.token_begin;
  p.start_position = batch.start_position;
  p.token_entry = batch.token_entry;
  p.block_tables = batch.block_tables;
  p.max_blocks_per_seq = batch.max_blocks_per_seq;
  p.num_tokens = batch.num_tokens;
  p.device_num_tokens = batch.device_num_tokens;
  p.num_heads = num_heads;
  p.num_kv_heads = cache.num_kv_heads;
  p.group = group;
  p.tokens_per_tile = kPrefillRows / group;
  p.log2_block_size = log2_block_size;
  p.scale_log2 = scale * kLog2e;
  const dim3 prefill_grid((batch.num_tokens + p.tokens_per_tile - 1) / p.tokens_per_tile,
                          cache.num_kv_heads);
  const bool split = options.prefill_split_bf16;
  switch (head_dim) {
    case 32: return LaunchPrefillForHeadDim<32>(split, p, prefill_grid, stream);
    case 64: return LaunchPrefillForHeadDim<64>(split, p, prefill_grid, stream);
    case 96: return LaunchPrefillForHeadDim<96>(split, p, prefill_grid, stream);
    default: return LaunchPrefillForHeadDim<128>(split, p, prefill_grid, stream);
  }
}

}  // namespace bitserve::cuda
