// Pieces shared by the paged attention translation units (one family, several files so that each
// stays readable and nvcc compiles them in parallel):
//   paged_attention.cu          host entry points: validation, split-KV choice, launches
//   paged_attention_decode.cu   decode (split-KV, CUDA cores) and the split combine kernels
//   paged_attention_decode_mma.cu  decode over int8 / int4 caches on tensor cores
//   paged_attention_prefill.cu  prefill (tensor cores)
//   paged_kv_write.cu           WritePagedKv (quantize on write)
// and qkv_rope.cu's q/k/v epilogue that writes a bf16 cache itself (KvDestination).
// The cache layout and the batch description are drawn in paged_attention.cuh, the element
// formats in kernels/kv_cache_format.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/kv_cache_format.h"

namespace bitserve::cuda::paged_attention {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxSplits = 256;
// Workspace records (one per entry and split, each num_heads x (head_dim + 2) floats): enough for
// ~8 blocks per SM at batch 1 (128K context: 5 KV heads x ~200 splits) without sizing the
// workspace by max_tokens x max splits (gigabytes for a 4096-token bucket).
constexpr int kMaxSplitRecords = 2048;
constexpr int kDecodeWarps = 4;
constexpr int kPrefillRows = 64;  // (token, head) rows per prefill block: 4 warps x 16
constexpr int kPrefillKeys = 64;  // keys per K/V tile
constexpr int kCombineThreads = 256;

__device__ __forceinline__ int DeviceCount(const int32_t* device_count, int host_count) {
  return device_count != nullptr ? *device_count : host_count;
}

inline int Log2(int x) {
  int l = 0;
  while ((1 << l) < x) ++l;
  return l;
}

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Where each new token's keys and values go in the cache (WritePagedKv, and the q/k/v epilogue
// that writes a bf16 cache itself).
struct KvDestination {
  const int32_t* token_begin;
  const int32_t* start_position;
  const int32_t* token_entry;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int num_blocks;
  int log2_block_size;
  int num_tokens;
  const int32_t* device_num_tokens;

  static KvDestination For(const AttentionBatch& batch, const PagedKvLayer& cache) {
    return {batch.token_begin,      batch.start_position,     batch.token_entry,
            batch.block_tables,     batch.max_blocks_per_seq, cache.num_blocks,
            Log2(cache.block_size), batch.num_tokens,         batch.device_num_tokens};
  }

  // The cache row of flattened token t, or -1 when it has none (a bound past the true count, or
  // a position outside its block table: the engine's bug; never write wild).
  __device__ __forceinline__ int64_t Row(int t) const {
    if (t >= DeviceCount(device_num_tokens, num_tokens)) return -1;
    const int e = token_entry[t];
    const int p = start_position[e] + t - token_begin[e];
    const int block_index = p >> log2_block_size;
    if (p < 0 || block_index >= max_blocks_per_seq) return -1;
    const int block = block_tables[static_cast<int64_t>(e) * max_blocks_per_seq + block_index];
    if (block < 0 || block >= num_blocks) return -1;
    return (static_cast<int64_t>(block) << log2_block_size) + (p & ((1 << log2_block_size) - 1));
  }
};

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

__device__ __forceinline__ float HalfBitsToFloat(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}

// Eight consecutive elements of a (token, KV head) row as the decode kernel loads them: the raw
// bytes (16 for bf16, 8 for int8, 4 for int4; chunk c of a row starts at byte c * kBytes) and
// their dequantization with the row's params (int8: scale in bits 0-15; int4: scale in bits 0-15,
// zero in bits 16-31), giving exactly kv_cache_format.h's values.
template <KvDtype kType>
struct KvChunk;

template <>
struct KvChunk<KvDtype::kBf16> {
  using Raw = uint4;
  static constexpr int kBytes = 16;
  __device__ static Raw Load(const uint8_t* p) { return __ldcs(reinterpret_cast<const uint4*>(p)); }
  __device__ static uint32_t LoadParams(const uint16_t*, int64_t) { return 0; }
  __device__ static void ToFloat(const Raw& r, uint32_t, float (&f)[8]) { Bf16x8ToFloat(r, f); }
};

template <>
struct KvChunk<KvDtype::kInt8> {
  using Raw = uint2;
  static constexpr int kBytes = 8;
  __device__ static Raw Load(const uint8_t* p) { return __ldcs(reinterpret_cast<const uint2*>(p)); }
  __device__ static uint32_t LoadParams(const uint16_t* params, int64_t index) {
    return __ldcs(reinterpret_cast<const unsigned short*>(params) + index);
  }
  __device__ static void ToFloat(const Raw& r, uint32_t params, float (&f)[8]) {
    const float scale = HalfBitsToFloat(params);
    const uint32_t w[2] = {r.x, r.y};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int q = static_cast<int8_t>((w[i / 4] >> (8 * (i % 4))) & 0xffu);
      f[i] = static_cast<float>(q) * scale;  // exact (kv_cache_format.h)
    }
  }
};

template <>
struct KvChunk<KvDtype::kInt4> {
  using Raw = uint32_t;
  static constexpr int kBytes = 4;
  __device__ static Raw Load(const uint8_t* p) {
    return __ldcs(reinterpret_cast<const unsigned int*>(p));
  }
  __device__ static uint32_t LoadParams(const uint16_t* params, int64_t index) {
    return __ldcs(reinterpret_cast<const unsigned int*>(params) + index);
  }
  __device__ static void ToFloat(const Raw& r, uint32_t params, float (&f)[8]) {
    const float scale = HalfBitsToFloat(params), zero = HalfBitsToFloat(params >> 16);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      // q * scale is exact, so the fused multiply-add rounds like the CPU's multiply, then add.
      f[i] = fmaf(static_cast<float>((r >> (4 * i)) & 15u), scale, zero);
    }
  }
};

struct DecodeArgs {
  const float* q;
  float* out;
  const uint8_t* k;
  const uint8_t* v;
  const uint16_t* k_params;
  const uint16_t* v_params;
  int64_t row_bytes;  // num_kv_heads * KvHeadBytes(dtype, head_dim)
  const int32_t* token_begin;
  const int32_t* start_position;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int num_entries;
  const int32_t* device_num_entries;
  int num_heads, num_kv_heads, group, subgroups;
  int heads_per_block;  // of the group (the last slice may have fewer)
  int log2_block_size;
  float scale_log2;
  int num_splits, split_len;
  float* partial_o;   // [entry][head][split][head_dim], when num_splits > 1
  float* partial_ml;  // [entry][head][split][2]: max (log2 domain), sum
};

// The end of a decode block (both decode kernels): its warps' partial results merged and heads
// head0 .. head0 + heads_here - 1 of token t written, normalized to out (one split) or as the
// split's record (unnormalized output, max, sum) for the combine kernel. Warp w's row r (head
// head0 + r) is at s_m[w * rows + r], s_l[...] (max in the log2 domain, sum) and
// s_acc[(w * rows + r) * acc_stride ...] (kHeadDim floats). Call after the __syncthreads that
// publishes them; every warp's max is finite or -inf with sum 0 (warp 0 saw key `begin`).
template <int kHeadDim>
__device__ __forceinline__ void StoreDecodeBlockResult(const DecodeArgs& a, const float* s_acc,
                                                       int acc_stride, const float* s_m,
                                                       const float* s_l, int rows, int heads_here,
                                                       int head0, int e, int t) {
  for (int idx = threadIdx.x; idx < heads_here * kHeadDim; idx += kDecodeWarps * 32) {
    const int r = idx / kHeadDim, d = idx % kHeadDim;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, s_m[w * rows + r]);
    float sum = 0, o = 0;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float c = exp2f(s_m[w * rows + r] - mx);
      sum += s_l[w * rows + r] * c;
      o += s_acc[(w * rows + r) * acc_stride + d] * c;
    }
    const int head = head0 + r;
    if (a.num_splits == 1) {
      a.out[(static_cast<int64_t>(t) * a.num_heads + head) * kHeadDim + d] = o / sum;
    } else {
      const int64_t record =
          (static_cast<int64_t>(e) * a.num_heads + head) * a.num_splits + blockIdx.x;
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

struct PrefillArgs {
  const float* q;
  float* out;
  const uint8_t* k;
  const uint8_t* v;
  const uint16_t* k_params;
  const uint16_t* v_params;
  int64_t row_bytes;
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

// Checks the cache description (dtype, shapes, params planes) and the batch bounds.
absl::Status ValidateCache(const AttentionBatch& batch, const PagedKvLayer& cache);

// Launchers (grid sizes chosen by paged_attention.cu). group_per_block: 1, 2, 4 or 8 query heads
// per decode block; head_dim: 32, 64, 96 or 128.
void LaunchDecode(int head_dim, int group_per_block, KvDtype dtype, const DecodeArgs& args,
                  dim3 grid, cudaStream_t stream);
// Decode blocks one SM holds at once (registers bound it).
int DecodeResidentBlocksPerSm(int head_dim, int group_per_block, KvDtype dtype);
// The tensor-core decode kernel for int8 / int4 caches (paged_attention_decode_mma.cu): which
// shapes it takes, its launcher (heads_per_block <= 16; min_blocks 2 or 3: the resident blocks
// per SM its registers are bounded for, above 8 heads always 2) and its resident blocks per SM.
bool DecodeMmaSupports(int head_dim, KvDtype dtype);
void LaunchDecodeMma(int head_dim, int heads_per_block, int min_blocks, KvDtype dtype,
                     const DecodeArgs& args, dim3 grid, cudaStream_t stream);
int DecodeMmaResidentBlocksPerSm(int head_dim, int heads_per_block, int min_blocks, KvDtype dtype);
void LaunchCombine(const CombineArgs& args, dim3 grid, cudaStream_t stream);
absl::Status LaunchPrefill(int head_dim, bool split_bf16, KvDtype dtype, const PrefillArgs& args,
                           dim3 grid, cudaStream_t stream);

}  // namespace bitserve::cuda::paged_attention
