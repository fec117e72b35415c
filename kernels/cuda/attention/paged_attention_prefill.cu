// Prefill attention over the paged cache (entries with two or more tokens) on tensor cores; see
// paged_attention_internal.cuh for the family's files.
//
// mma.sync m16n8k16 bf16 with fp32 accumulators. A block owns 64 rows = (token, query head) pairs
// of one KV head's group (GQA packing: 64 / group tokens x group heads), so every K/V tile it loads
// serves all heads of the group. q and the softmax weights p are split into hi + lo bf16 (two MMAs
// each), so the only rounding that reaches the result beyond fp32 is ~2^-17 relative (see
// paged_attention_options.cuh).
//
// K/V tiles of 64 keys come from the paged cache through cp.async. bf16: straight into a double
// buffer of bf16 tiles. int8 / int4: the raw bytes into a double buffer, then converted in shared
// memory to bf16 tiles of the integers c = q (int8, |q| <= 127) or c = q - 7.5 (int4), exact in
// bf16, with each key's scale s and offset o = zero + 7.5 s (0 for int8) beside them, because the
// dequantized values q * s (+ zero) need up to 19 significant bits and bf16 has 8. The scale and
// offset go around the MMAs, exactly:
//   S[r, j] = sum_d Q[r, d] (c_kj[d] s_kj + o_kj) = s_kj (Q[r] . c_kj) + o_kj sum_d Q[r, d]
//   O[r]    = sum_j P[r, j] (c_vj s_vj + o_vj)    = sum_j (P[r, j] s_vj) c_vj + sum_j P[r, j] o_vj
// so quantized caches keep the bf16 path's fp32-level accuracy (7.5 s is exact: o rounds once).
// Why int4 is centred (q - 7.5, and 7.5 s moved into the offset):
// with q in [0, 15] the two sums of O are each about the row's half-range and coherent over the
// keys, while O itself, an average over many keys, is small; at a 64-token chunk after 32K keys
// they cancelled to a 3.6e-3 relative error (bf16: 1e-4). Centred, each term is about the size
// of the values themselves.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/attention/mma_fragments.cuh"
#include "kernels/cuda/attention/paged_attention_internal.cuh"
#include "kernels/cuda/common/cp_async.cuh"
#include "kernels/cuda/common/cuda_check.cuh"

namespace bitserve::cuda::paged_attention {
namespace {

using attention_mma::MmaBf16;
using attention_mma::PackBf16;
using attention_mma::SplitBf16;
using internal::CpAsync16;
using internal::CpAsyncCommit;
using internal::CpAsyncWait;
using internal::SharedAddress;

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

template <int kHeadDim, bool kSplit, KvDtype kType>
constexpr int PrefillSharedBytes() {
  constexpr int kStrideBytes = (kHeadDim + 8) * 2;
  constexpr int kQ = (kSplit ? 2 : 1) * kPrefillRows * kStrideBytes;
  if constexpr (kType == KvDtype::kBf16) {
    return kQ + 4 * kPrefillKeys * kStrideBytes;  // K and V tiles, double-buffered
  } else {
    // K and V tiles (single), raw K and V (double), per-key (scale, offset) of K and V, Q row sums.
    return kQ + 2 * kPrefillKeys * kStrideBytes +
           4 * kPrefillKeys * static_cast<int>(KvHeadBytes(kType, kHeadDim)) +
           2 * kPrefillKeys * 8 + kPrefillRows * 4;
  }
}

// 16 raw bytes (16 int8 or 32 int4 values) -> bf16 at dst (16-byte aligned): q, or q - 7.5 for
// int4 (both exact).
template <KvDtype kType>
__device__ __forceinline__ void RawToBf16(const uint4& raw, __nv_bfloat16* dst) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (kType == KvDtype::kInt8) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      uint4 out;
      uint32_t* o = &out.x;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t word = w[half * 2 + i / 2];
        const int shift = 16 * (i % 2);
        const float lo = static_cast<float>(static_cast<int8_t>((word >> shift) & 0xffu));
        const float hi = static_cast<float>(static_cast<int8_t>((word >> (shift + 8)) & 0xffu));
        o[i] = PackBf16(lo, hi);
      }
      *reinterpret_cast<uint4*>(dst + 8 * half) = out;
    }
  } else {
#pragma unroll
    for (int quarter = 0; quarter < 4; ++quarter) {  // one word = 8 nibbles, element i at bits 4i
      uint4 out;
      uint32_t* o = &out.x;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t word = w[quarter];
        o[i] = PackBf16(static_cast<float>((word >> (8 * i)) & 15u) - 7.5f,
                        static_cast<float>((word >> (8 * i + 4)) & 15u) - 7.5f);
      }
      *reinterpret_cast<uint4*>(dst + 8 * quarter) = out;
    }
  }
}

// Fragment layouts: mma_fragments.cuh. The S accumulators of two adjacent 8-key tiles are exactly
// the A fragment of P for 16 keys, so P never leaves registers.
template <int kHeadDim, bool kSplit, KvDtype kType>
__global__ void __launch_bounds__(128, 2) PrefillKernel(PrefillArgs a) {
  constexpr bool kQuantized = kType != KvDtype::kBf16;
  constexpr bool kHasZero = kType == KvDtype::kInt4;
  constexpr int kStride = kHeadDim + 8;  // bf16 per shared row; +16 bytes: conflict-free ldmatrix
  constexpr int kDimSteps = kHeadDim / 16;
  constexpr int kDimTiles = kHeadDim / 8;
  constexpr int kKeyTiles = kPrefillKeys / 8;
  constexpr int kQPlanes = kSplit ? 2 : 1;
  constexpr int kChunksPerRow = kHeadDim / 8;
  constexpr int kHeadBytes = static_cast<int>(KvHeadBytes(kType, kHeadDim));
  constexpr int kRawChunks = kHeadBytes / 16;  // 16-byte pieces of one key's raw row
  constexpr int kTileBuffers = kQuantized ? 1 : 2;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem);  // [kQPlanes][64][kStride]
  __nv_bfloat16* sk = sq + kQPlanes * kPrefillRows * kStride;  // [kTileBuffers][64][kStride]
  __nv_bfloat16* sv = sk + kTileBuffers * kPrefillKeys * kStride;
  // Quantized only: raw K, V [2][64][kHeadBytes]; (scale, offset) of K, V [64]; Q row sums [64].
  uint8_t* raw_k = reinterpret_cast<uint8_t*>(sv + kTileBuffers * kPrefillKeys * kStride);
  uint8_t* raw_v = raw_k + 2 * kPrefillKeys * kHeadBytes;
  float2* s_kparam = reinterpret_cast<float2*>(raw_v + 2 * kPrefillKeys * kHeadBytes);
  float2* s_vparam = s_kparam + kPrefillKeys;
  float* s_qsum = reinterpret_cast<float*>(s_vparam + kPrefillKeys);

  const int num_tokens = DeviceCount(a.device_num_tokens, a.num_tokens);
  const int tile = gridDim.x - 1 - blockIdx.x;  // later tokens (more keys) start first
  const int tok0 = tile * a.tokens_per_tile;
  if (tok0 >= num_tokens) return;
  const int tok_end = min(tok0 + a.tokens_per_tile, num_tokens);
  const int kv_head = blockIdx.y;
  const int G = a.group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;

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
      SplitBf16(x.x, x.y, hi.x, lo.x);
      SplitBf16(x.z, x.w, hi.y, lo.y);
      *reinterpret_cast<uint2*>(sq + r * kStride + c) = hi;
      if constexpr (kSplit) *reinterpret_cast<uint2*>(sq + (kPrefillRows + r) * kStride + c) = lo;
    }

    // This lane's two rows: positions (-1: not a row of this entry; fully masked, not stored).
    int row_pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = warp * 16 + g + 8 * h;
      const int token = tok0 + r / G;
      row_pos[h] =
          (r < a.tokens_per_tile * G && token >= ta && token < tb) ? pos_offset + token : -1;
    }
    int warp_min =
        min(row_pos[0] < 0 ? INT_MAX : row_pos[0], row_pos[1] < 0 ? INT_MAX : row_pos[1]);
    int warp_max = max(row_pos[0], row_pos[1]);
    warp_min = __reduce_min_sync(0xffffffffu, warp_min);
    warp_max = __reduce_max_sync(0xffffffffu, warp_max);

    // int4: sum_d Q[r, d] of this lane's rows, of the bf16 values the MMAs see.
    float qsum[2] = {0, 0};
    if constexpr (kHasZero) {
      __syncthreads();  // Q rows stored
      if (threadIdx.x < kPrefillRows) {
        float sum = 0;
        for (int d = 0; d < kHeadDim; ++d) {
          sum += __bfloat162float(sq[threadIdx.x * kStride + d]);
          if constexpr (kSplit)
            sum += __bfloat162float(sq[(kPrefillRows + threadIdx.x) * kStride + d]);
        }
        s_qsum[threadIdx.x] = sum;
      }
      __syncthreads();
      qsum[0] = s_qsum[warp * 16 + g];
      qsum[1] = s_qsum[warp * 16 + g + 8];
    }

    // bf16: tile j straight into tile buffer `buf`. Quantized: raw bytes into raw buffer `buf`.
    auto load_tile = [&](int j, int buf) {
      constexpr int kPieces = kQuantized ? kRawChunks : kChunksPerRow;  // 16 bytes each
      for (int c = threadIdx.x; c < kPrefillKeys * kPieces; c += 128) {
        const int key = c / kPieces, byte = (c % kPieces) * 16;
        const int p = j * kPrefillKeys + key;
        const uint8_t* src_k = a.k;
        const uint8_t* src_v = a.v;
        int bytes = 0;
        if (p <= pos_hi) {
          const int64_t off =
              CacheRow(table, p, a.log2_block_size) * a.row_bytes + kv_head * kHeadBytes + byte;
          src_k += off;
          src_v += off;
          bytes = 16;
        }
        if constexpr (kQuantized) {
          CpAsync16(raw_k + (buf * kPrefillKeys + key) * kHeadBytes + byte, src_k, bytes);
          CpAsync16(raw_v + (buf * kPrefillKeys + key) * kHeadBytes + byte, src_v, bytes);
        } else {
          const int col = byte / 2;
          CpAsync16(sk + (buf * kPrefillKeys + key) * kStride + col, src_k, bytes);
          CpAsync16(sv + (buf * kPrefillKeys + key) * kStride + col, src_v, bytes);
        }
      }
      CpAsyncCommit();
    };
    // Quantized: thread i < 64 fetches key i's K params, thread 64 + i its V params (0 past the
    // sequence: those keys become exact zeros).
    auto load_params = [&](int j) -> uint32_t {
      const int p = j * kPrefillKeys + (threadIdx.x & (kPrefillKeys - 1));
      if (p > pos_hi) return 0;
      const int64_t index = CacheRow(table, p, a.log2_block_size) * a.num_kv_heads + kv_head;
      return KvChunk<kType>::LoadParams(threadIdx.x < kPrefillKeys ? a.k_params : a.v_params,
                                        index);
    };
    // Quantized: raw buffer `buf` -> the bf16 tiles, and this thread's (scale, offset) to shared.
    auto convert = [&](int buf, uint32_t params) {
      for (int c = threadIdx.x; c < 2 * kPrefillKeys * kRawChunks; c += 128) {
        const bool is_v = c >= kPrefillKeys * kRawChunks;
        const int cc = is_v ? c - kPrefillKeys * kRawChunks : c;
        const int key = cc / kRawChunks, byte = (cc % kRawChunks) * 16;
        const uint4 raw = *reinterpret_cast<const uint4*>(
            (is_v ? raw_v : raw_k) + (buf * kPrefillKeys + key) * kHeadBytes + byte);
        constexpr int kElementsPerByte = kType == KvDtype::kInt4 ? 2 : 1;
        RawToBf16<kType>(raw, (is_v ? sv : sk) + key * kStride + byte * kElementsPerByte);
      }
      const float scale = HalfBitsToFloat(params);
      const float2 pr =
          make_float2(scale, kHasZero ? fmaf(7.5f, scale, HalfBitsToFloat(params >> 16)) : 0.0f);
      (threadIdx.x < kPrefillKeys ? s_kparam : s_vparam)[threadIdx.x & (kPrefillKeys - 1)] = pr;
    };

    float o[kDimTiles][4];
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
    float zacc[2] = {0, 0};  // int4: sum_j P[r, j] o_vj, this lane's columns

    const int num_kv_tiles = pos_hi / kPrefillKeys + 1;
    uint32_t params = 0;
    load_tile(0, 0);
    if constexpr (kQuantized) params = load_params(0);
    for (int j = 0; j < num_kv_tiles; ++j) {
      if (j + 1 < num_kv_tiles) {
        load_tile(j + 1, (j + 1) & 1);
        CpAsyncWait<1>();
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();
      const __nv_bfloat16* tk = sk;
      const __nv_bfloat16* tv = sv;
      if constexpr (kQuantized) {
        convert(j & 1, params);
        if (j + 1 < num_kv_tiles) params = load_params(j + 1);  // used after the next wait
        __syncthreads();
      } else {
        tk += (j & 1) * kPrefillKeys * kStride;
        tv += (j & 1) * kPrefillKeys * kStride;
      }
      const int k0 = j * kPrefillKeys;
      if (k0 <= warp_max) {
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
            MmaBf16(s[2 * np], qa, kb[0], kb[1]);
            MmaBf16(s[2 * np + 1], qa, kb[2], kb[3]);
            if constexpr (kSplit) {
              MmaBf16(s[2 * np], ql, kb[0], kb[1]);
              MmaBf16(s[2 * np + 1], ql, kb[2], kb[3]);
            }
          }
        }
        if constexpr (kQuantized) {  // S = s_k (Q . c_k) + o_k sum(Q)
#pragma unroll
          for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const float2 kp = s_kparam[nt * 8 + 2 * t4 + (i & 1)];
              s[nt][i] *= kp.x;
              if constexpr (kHasZero) s[nt][i] = fmaf(kp.y, qsum[i >> 1], s[nt][i]);
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
          float sum = 0, zsum = 0;
#pragma unroll
          for (int nt = 0; nt < kKeyTiles; ++nt) {
            s[nt][2 * h] = exp2f(s[nt][2 * h] - base);
            s[nt][2 * h + 1] = exp2f(s[nt][2 * h + 1] - base);
            sum += s[nt][2 * h] + s[nt][2 * h + 1];
            if constexpr (kHasZero) {
              zsum = fmaf(s[nt][2 * h], s_vparam[nt * 8 + 2 * t4].y, zsum);
              zsum = fmaf(s[nt][2 * h + 1], s_vparam[nt * 8 + 2 * t4 + 1].y, zsum);
            }
          }
          l[h] = l[h] * corr + sum;  // this lane's columns; the quad is summed at the end
          if constexpr (kHasZero) zacc[h] = zacc[h] * corr + zsum;
#pragma unroll
          for (int dn = 0; dn < kDimTiles; ++dn) {
            o[dn][2 * h] *= corr;
            o[dn][2 * h + 1] *= corr;
          }
        }
        if constexpr (kQuantized) {  // P s_v enters the MMA with c_v
#pragma unroll
          for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) s[nt][i] *= s_vparam[nt * 8 + 2 * t4 + (i & 1)].x;
          }
        }
#pragma unroll
        for (int kk = 0; kk < kKeyTiles / 2; ++kk) {
          uint32_t pa[4], pl[4];
          SplitBf16(s[2 * kk][0], s[2 * kk][1], pa[0], pl[0]);
          SplitBf16(s[2 * kk][2], s[2 * kk][3], pa[1], pl[1]);
          SplitBf16(s[2 * kk + 1][0], s[2 * kk + 1][1], pa[2], pl[2]);
          SplitBf16(s[2 * kk + 1][2], s[2 * kk + 1][3], pa[3], pl[3]);
#pragma unroll
          for (int dp = 0; dp < kDimSteps; ++dp) {
            uint32_t vb[4];
            LdMatrixX4Trans(vb, tv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride +
                                    dp * 16 + (lane >> 4) * 8);
            MmaBf16(o[2 * dp], pa, vb[0], vb[1]);
            MmaBf16(o[2 * dp + 1], pa, vb[2], vb[3]);
            if constexpr (kSplit) {
              MmaBf16(o[2 * dp], pl, vb[0], vb[1]);
              MmaBf16(o[2 * dp + 1], pl, vb[2], vb[3]);
            }
          }
        }
      }
      __syncthreads();  // the buffers just read are the next loads' targets
    }

#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[h], z = zacc[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if constexpr (kHasZero) {
        z += __shfl_xor_sync(0xffffffffu, z, 1);
        z += __shfl_xor_sync(0xffffffffu, z, 2);
      }
      if (row_pos[h] < 0) continue;
      const int r = warp * 16 + g + 8 * h;
      const int token = tok0 + r / G;
      const float inv = 1.0f / sum;
      float* dst = a.out +
                   (static_cast<int64_t>(token) * a.num_heads + kv_head * G + r % G) * kHeadDim +
                   2 * t4;
#pragma unroll
      for (int dn = 0; dn < kDimTiles; ++dn) {
        *reinterpret_cast<float2*>(dst + dn * 8) =
            make_float2((o[dn][2 * h] + z) * inv, (o[dn][2 * h + 1] + z) * inv);
      }
    }
  }
}

template <int kHeadDim, bool kSplit, KvDtype kType>
absl::Status Launch(const PrefillArgs& args, dim3 grid, cudaStream_t stream) {
  constexpr int kBytes = PrefillSharedBytes<kHeadDim, kSplit, kType>();
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      PrefillKernel<kHeadDim, kSplit, kType>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  PrefillKernel<kHeadDim, kSplit, kType><<<grid, 128, kBytes, stream>>>(args);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <int kHeadDim>
absl::Status LaunchForHeadDim(bool split, KvDtype dtype, const PrefillArgs& args, dim3 grid,
                              cudaStream_t stream) {
  switch (dtype) {
    // The plain-bf16 variant (q and p rounded to bf16) exists for timing the bf16 cache only.
    case KvDtype::kBf16:
      return split ? Launch<kHeadDim, true, KvDtype::kBf16>(args, grid, stream)
                   : Launch<kHeadDim, false, KvDtype::kBf16>(args, grid, stream);
    case KvDtype::kInt8:
      return Launch<kHeadDim, true, KvDtype::kInt8>(args, grid, stream);
    default:
      return Launch<kHeadDim, true, KvDtype::kInt4>(args, grid, stream);
  }
}

}  // namespace

absl::Status LaunchPrefill(int head_dim, bool split_bf16, KvDtype dtype, const PrefillArgs& args,
                           dim3 grid, cudaStream_t stream) {
  switch (head_dim) {
    case 32:
      return LaunchForHeadDim<32>(split_bf16, dtype, args, grid, stream);
    case 64:
      return LaunchForHeadDim<64>(split_bf16, dtype, args, grid, stream);
    case 96:
      return LaunchForHeadDim<96>(split_bf16, dtype, args, grid, stream);
    default:
      return LaunchForHeadDim<128>(split_bf16, dtype, args, grid, stream);
  }
}

}  // namespace bitserve::cuda::paged_attention
