// Decode attention over a bf16, int8 or int4 paged cache on tensor cores (head_dim 64 or 128); see
// paged_attention_internal.cuh for the family's files. The CUDA-core decode kernel
// (paged_attention_decode.cu) serves the other head sizes, and bf16 caches unless
// PagedAttentionOptions::decode_tensor_cores_bf16 asks for this one.
//
// Why: on CUDA cores a quantized key costs ~100 warp instructions (dequantization, 64 FMAs per
// lane group, shuffle reductions, an exp per head in every lane), so the int8 / int4 kernels were
// issue-bound at 39-44% / 23-25% of HBM bandwidth (docs/perf.md). Here one warp takes 16 keys at a
// time through mma.sync m16n8k16, with the query heads of one KV head as the 16 rows:
//   S = q K^T: A = q (fp16 hi + lo, per-row power-of-two prescale), B = the keys' integers c,
//              exact in fp16 (int8 q; int4 n - 7.5); bf16 caches: A = q as bf16 hi + lo, B =
//              the keys as stored;
//   O = P V:   A = P s_v (bf16 hi + lo), B = the values' integers, exact in bf16 (bf16 caches:
//              the values as stored, s_v = 1).
// Scales and offsets go around the MMAs exactly as in the prefill kernel:
//   S[r, j] = s_kj (q_r . c_kj) + o_kj sum(q_r),  O[r] = sum_j (P[r, j] s_vj) c_vj + sum_j P o_vj,
// with o = 0 (int8, bf16: s = 1) or zero + 7.5 s (int4). P s_v is bf16 (fp32's exponent range, so
// no value scale underflows); q is fp16 (its 11-bit mantissa, two halves: ~22 bits) scaled by 2^e
// so its largest element is in [2^13, 2^14), which keeps both halves normal.
//
// Each lane needs contiguous bytes only, because the dot products do not care which element of
// a row meets which element of the other operand as long as both agree:
//   keys:   lane (g, t) loads key g's (and g + 8's) bytes [t D/4, (t + 1) D/4) of dims; k-step ks
//           reads 4 of those dims (DimOfK below gives which), and q's fragment is built from the
//           same dims;
//   values: lane (g, t) loads dims [g D/8, (g + 1) D/8) of keys 2t, 2t+1, 2t+8, 2t+9; n-tile nd's
//           column c is dim c D/8 + nd, so the output lands at dims (2t) D/8 + nd, (2t+1) D/8 + nd.
// K/V tiles of 64 keys (4 warps x 16) stream into shared memory through a cp.async ring of
// kStages tiles; each key's (scale, offset) pairs are loaded two tiles ahead into registers and
// stored beside them. Splits, the partial records and the combine are the CUDA-core kernel's.
// Measured (docs/perf.md, H100): 1.3-1.75x the CUDA-core kernel at >= 32K; int8 up to 68% and
// int4 up to 42% of the streaming-read bandwidth: still latency-bound (~25-29 SM clocks per key,
// 8 warps per SM at 212 registers). bf16 caches (twice int8's bytes a key, no dequantization) came
// later, for large batches of short contexts, where the CUDA-core kernel's ~2K FMAs per key and
// KV head (8 query heads) made it issue-bound at a third of the bandwidth.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention/mma_fragments.cuh"
#include "kernels/cuda/attention/paged_attention_internal.cuh"
#include "kernels/cuda/common/cp_async.cuh"
#include "kernels/cuda/common/pdl.cuh"

namespace bitserve::cuda::paged_attention {
namespace {

using attention_mma::AsBf162;
using attention_mma::AsHalf2;
using attention_mma::Bits;
using attention_mma::MmaBf16;
using attention_mma::MmaF16;
using attention_mma::SplitBf16;
using attention_mma::SplitHalf;
using internal::CpAsync16;
using internal::CpAsyncCommit;
using internal::CpAsyncWait;

constexpr int kTileKeys = kDecodeWarps * 16;

template <int kHeadDim, KvDtype kType>
struct MmaShape {
  static constexpr int kHeadBytes = static_cast<int>(KvHeadBytes(kType, kHeadDim));
  static constexpr int kStride = kHeadBytes + 16;  // shared row stride: spreads lanes over banks
  static constexpr int kStages = kType == KvDtype::kInt4 ? 4 : 3;
  static constexpr int kKLaneBytes = kHeadBytes / 4;  // one key's bytes per lane (4 lanes a key)
  static constexpr int kVLaneBytes = kHeadBytes / 8;  // one value row's bytes per lane (8 lanes)
  static constexpr int kTileBytes = kTileKeys * kStride;
  static constexpr int kParamBytes = kTileKeys * static_cast<int>(sizeof(float2));
  static constexpr int kStageBytes = 2 * kTileBytes + 2 * kParamBytes;
  // The warps' partial outputs at the end: rows of kHeadDim + 4 floats (the lanes of a row quad
  // write columns 2t D/8 apart: a plain stride would put all 32 lanes on one bank).
  static constexpr int kAccStride = kHeadDim + 4;
  static constexpr int kMergeBytes = kDecodeWarps * 16 * kAccStride * 4 + 2 * kDecodeWarps * 16 * 4;
  static constexpr int kSharedBytes = std::max(kStages * kStageBytes, kMergeBytes);
};

// Within lane t's D/4 dims of a key, the dim of k-step ks's B row r (r = 0, 1: rows 2t, 2t+1;
// r = 2, 3: rows 2t+8, 2t+9), as KeyPairs below converts them.
template <KvDtype kType>
__device__ __forceinline__ int DimOfK(int ks, int r) {
  if constexpr (kType != KvDtype::kInt4) {
    return 4 * ks + r;  // int8 word ks: bytes (0, 1) -> b0, (2, 3) -> b1; bf16 words 2ks, 2ks + 1
  } else {
    // word ks / 2, half h = ks % 2: b0 = nibbles (2h, 2h + 4), b1 = nibbles (2h + 1, 2h + 5)
    const int h = ks & 1;
    const int nibble = r == 0 ? 2 * h : r == 1 ? 2 * h + 4 : r == 2 ? 2 * h + 1 : 2 * h + 5;
    return 8 * (ks >> 1) + nibble;
  }
}

// The B fragment (b0, b1) of k-step ks from the lane's key words: fp16 integers c (int8: q;
// int4: n - 7.5), exact; bf16: the stored pairs themselves.
template <KvDtype kType>
__device__ __forceinline__ void KeyPairs(const uint32_t* words, int ks, uint32_t& b0,
                                         uint32_t& b1) {
  if constexpr (kType == KvDtype::kBf16) {
    b0 = words[2 * ks];
    b1 = words[2 * ks + 1];
  } else if constexpr (kType == KvDtype::kInt8) {
    const uint32_t x = words[ks] ^ 0x80808080u;                   // q + 128
    const __half2 bias = __half2half2(__ushort_as_half(0x6480));  // 1152 = 1024 + 128
    // 0x64uu as fp16 is 1024 + uu.
    b0 = Bits(__hsub2(AsHalf2(__byte_perm(x, 0x64646464u, 0x4140)), bias));
    b1 = Bits(__hsub2(AsHalf2(__byte_perm(x, 0x64646464u, 0x4342)), bias));
  } else {
    const uint32_t w = words[ks >> 1];
    const int s = 8 * (ks & 1);  // nibbles 2h and 2h + 4 sit at bits 8h and 8h + 16
    // Nibble n at mantissa bits 6-9 of 0x4C00 (fp16 16.0): 16 + n; minus 23.5 gives n - 7.5.
    const __half2 bias = __half2half2(__ushort_as_half(0x4DE0));  // 23.5
    const uint32_t lo = ((w >> s) << 6) & 0x03C003C0u;
    const uint32_t hi = ((w >> (s + 4)) << 6) & 0x03C003C0u;
    b0 = Bits(__hsub2(AsHalf2(lo | 0x4C004C00u), bias));
    b1 = Bits(__hsub2(AsHalf2(hi | 0x4C004C00u), bias));
  }
}

// The B fragment of value n-tile nd: bf16 integers c of (key a, key b) at the lane's element nd
// (bf16 caches: the stored elements).
template <KvDtype kType>
__device__ __forceinline__ uint32_t ValuePair(const uint32_t* wa, const uint32_t* wb, int nd) {
  if constexpr (kType == KvDtype::kBf16) {
    // Element nd is half nd % 2 of word nd / 2: key a's half low, key b's high.
    return __byte_perm(wa[nd >> 1], wb[nd >> 1], (nd & 1) ? 0x7632u : 0x5410u);
  } else if constexpr (kType == KvDtype::kInt8) {
    const int word = nd >> 2, byte = nd & 3;
    // fp32 2^23 + (q + 128), minus 2^23 + 128: q exactly; then both to bf16 (exact).
    const uint32_t sel = 0x7650u | static_cast<uint32_t>(byte);
    const float fa = __uint_as_float(__byte_perm(wa[word] ^ 0x80808080u, 0x4B000000u, sel));
    const float fb = __uint_as_float(__byte_perm(wb[word] ^ 0x80808080u, 0x4B000000u, sel));
    return Bits(__floats2bfloat162_rn(fa - 8388736.0f, fb - 8388736.0f));
  } else {
    const int word = nd >> 3, byte = (nd & 7) >> 1;
    // Key a's byte in byte 0, key b's in byte 2; the nibble to bits 3-6 of each half, under
    // bf16 16.0 (0x4180): 16 + n; minus 23.5 gives n - 7.5.
    const uint32_t sel = static_cast<uint32_t>(byte | ((4 + byte) << 8));
    const uint32_t both = __byte_perm(wa[word], wb[word], sel);
    const uint32_t n = (nd & 1) ? (both >> 1) : (both << 3);
    const __nv_bfloat162 v = AsBf162((n & 0x00780078u) | 0x41804180u);
    return Bits(__hsub2(v, __float2bfloat162_rn(23.5f)));
  }
}

template <int kBytes>
__device__ __forceinline__ void LoadShared(uint32_t* dst, const uint8_t* src) {
  if constexpr (kBytes == 4) {
    dst[0] = *reinterpret_cast<const uint32_t*>(src);
  } else if constexpr (kBytes == 8) {
    const uint2 u = *reinterpret_cast<const uint2*>(src);
    dst[0] = u.x, dst[1] = u.y;
  } else {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 u = *reinterpret_cast<const uint4*>(src + 16 * i);
      dst[4 * i] = u.x, dst[4 * i + 1] = u.y, dst[4 * i + 2] = u.z, dst[4 * i + 3] = u.w;
    }
  }
}

// kRows16: the block's query heads fill all 16 MMA rows (more than 8 heads); otherwise rows 8-15
// are zero padding and their softmax is skipped. kMinBlocks: resident blocks per SM the registers
// are bounded for (3: <= 168 registers, a few spilled; 2: no spills).
template <int kHeadDim, KvDtype kType, bool kRows16, int kMinBlocks>
__global__ void __launch_bounds__(kDecodeWarps * 32, kMinBlocks) DecodeMmaKernel(DecodeArgs a) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  using Shape = MmaShape<kHeadDim, kType>;
  constexpr bool kHasZero = kType == KvDtype::kInt4;
  constexpr bool kQuantized = kType != KvDtype::kBf16;
  constexpr int kStages = Shape::kStages;
  constexpr int kKSteps = kHeadDim / 16;
  constexpr int kNTiles = kHeadDim / 8;
  constexpr int kRowHalves = kRows16 ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem[];

  const int e = blockIdx.z;
  if (e >= DeviceCount(a.device_num_entries, a.num_entries)) return;
  const int t_tok = a.token_begin[e];
  if (a.token_begin[e + 1] - t_tok != 1) return;  // a prefill chunk: the prefill kernel's
  const int context = a.start_position[e] + 1;
  const int begin = blockIdx.x * a.split_len;
  if (begin >= context) return;
  const int end = min(context, begin + a.split_len);
  const int kv_head = blockIdx.y / a.subgroups;
  const int sub = blockIdx.y % a.subgroups;
  const int head0 = kv_head * a.group + sub * a.heads_per_block;
  const int heads_here = min(a.heads_per_block, a.group - sub * a.heads_per_block);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;

  // q fragments (rows g and g + 8 of the MMA = heads head0 + g, head0 + g + 8), each row scaled
  // by 2^e so that its largest |element| lies in [2^13, 2^14); the sum of each row for int4.
  uint32_t qhi[kKSteps][4], qlo[kKSteps][4];
  float inv_pow2[2] = {1.0f, 1.0f}, qsum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = g + 8 * h;
    float x[kHeadDim / 4];
    const bool valid = row < heads_here && (h == 0 || kRows16);
    const float* qp = a.q + (static_cast<int64_t>(t_tok) * a.num_heads + head0 + row) * kHeadDim +
                      t * (kHeadDim / 4);
    float mx = 0.0f, sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kHeadDim / 4; i += 4) {
      float4 v = make_float4(0, 0, 0, 0);
      if (valid) v = *reinterpret_cast<const float4*>(qp + i);
      x[i] = v.x * a.scale_log2, x[i + 1] = v.y * a.scale_log2;
      x[i + 2] = v.z * a.scale_log2, x[i + 3] = v.w * a.scale_log2;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        mx = fmaxf(mx, fabsf(x[i + j]));
        sum += x[i + j];
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    int ex = 0;
    if (mx > 0.0f) (void)frexpf(mx, &ex);  // mx in [2^(ex-1), 2^ex)
    const int shift = mx > 0.0f ? max(-100, min(100, 14 - ex)) : 0;
    inv_pow2[h] = ldexpf(1.0f, -shift);
    qsum[h] = sum;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const float s = ldexpf(1.0f, shift);
      const auto split = [](float x0, float x1, uint32_t& hi, uint32_t& lo) {
        if constexpr (kQuantized) {
          SplitHalf(x0, x1, hi, lo);
        } else {
          SplitBf16(x0, x1, hi, lo);
        }
      };
      split(x[DimOfK<kType>(ks, 0)] * s, x[DimOfK<kType>(ks, 1)] * s, qhi[ks][h], qlo[ks][h]);
      split(x[DimOfK<kType>(ks, 2)] * s, x[DimOfK<kType>(ks, 3)] * s, qhi[ks][2 + h],
            qlo[ks][2 + h]);
    }
  }

  const int32_t* table = a.block_tables + static_cast<int64_t>(e) * a.max_blocks_per_seq;
  uint8_t* const tiles = smem;  // per stage: K tile, V tile, K params, V params
  const auto stage_k = [&](int slot) { return tiles + slot * Shape::kStageBytes; };
  const auto stage_v = [&](int slot) { return stage_k(slot) + Shape::kTileBytes; };
  const auto stage_params = [&](int slot) {
    return reinterpret_cast<float2*>(stage_v(slot) + Shape::kTileBytes);  // [K: 64][V: 64]
  };
  const int num_tiles = (end - begin + kTileKeys - 1) / kTileKeys;

  // Tile j's K and V rows into ring slot j % kStages (keys past the split: zeros).
  const auto issue_tile = [&](int j) {
    if (j < num_tiles) {
      constexpr int kPieces = Shape::kHeadBytes / 16;
      uint8_t* dk = stage_k(j % kStages);
      uint8_t* dv = stage_v(j % kStages);
      for (int c = threadIdx.x; c < kTileKeys * kPieces; c += kDecodeWarps * 32) {
        const int key = c / kPieces, byte = (c % kPieces) * 16;
        const int p = begin + j * kTileKeys + key;
        const uint8_t* src_k = a.k;
        const uint8_t* src_v = a.v;
        int bytes = 0;
        if (p < end) {
          const int64_t off = CacheRow(table, p, a.log2_block_size) * a.row_bytes +
                              kv_head * Shape::kHeadBytes + byte;
          src_k += off;
          src_v += off;
          bytes = 16;
        }
        CpAsync16(dk + key * Shape::kStride + byte, src_k, bytes);
        CpAsync16(dv + key * Shape::kStride + byte, src_v, bytes);
      }
    }
    CpAsyncCommit();  // an empty group past the end keeps the wait counts uniform
  };
  // Thread i < 64: key i's K params of tile j; thread 64 + i: its V params (0 past the split).
  // bf16 caches have none (scale 1, offset 0 at the use).
  const auto load_params = [&](int j) -> uint32_t {
    const int p = begin + j * kTileKeys + (threadIdx.x & (kTileKeys - 1));
    if (!kQuantized || j >= num_tiles || p >= end) return 0;
    const int64_t index = CacheRow(table, p, a.log2_block_size) * a.num_kv_heads + kv_head;
    return KvChunk<kType>::LoadParams(threadIdx.x < kTileKeys ? a.k_params : a.v_params, index);
  };
  const auto store_params = [&](int j, uint32_t params) {
    if constexpr (kQuantized) {
      const float scale = HalfBitsToFloat(params);
      const float offset = kHasZero ? fmaf(7.5f, scale, HalfBitsToFloat(params >> 16)) : 0.0f;
      stage_params(j % kStages)[threadIdx.x] = make_float2(scale, offset);
    }
  };

  float o[kNTiles][4];
#pragma unroll
  for (int i = 0; i < kNTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, zacc[2] = {0.0f, 0.0f};

#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) issue_tile(j);
  store_params(0, load_params(0));
  uint32_t pending_params = load_params(1);

  for (int it = 0; it < num_tiles; ++it) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // tile it landed for every thread; everyone is done with tile it - 1
    issue_tile(it + kStages - 1);
    if (it + 1 < num_tiles) store_params(it + 1, pending_params);
    pending_params = load_params(it + 2);

    const int key0 = begin + it * kTileKeys + warp * 16;  // this warp's 16 keys
    if (key0 >= end) continue;
    const uint8_t* sk = stage_k(it % kStages) + warp * 16 * Shape::kStride;
    const uint8_t* sv = stage_v(it % kStages) + warp * 16 * Shape::kStride;
    const float2* kparams = stage_params(it % kStages) + warp * 16;
    const float2* vparams = kparams + kTileKeys;

    // S = q K^T: two n-tiles of 8 keys (lane g loads keys g and 8 + g).
    float s[2][4], s_lo[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      uint32_t kw[Shape::kKLaneBytes / 4];
      LoadShared<Shape::kKLaneBytes>(kw,
                                     sk + (nt * 8 + g) * Shape::kStride + t * Shape::kKLaneBytes);
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      s_lo[nt][0] = s_lo[nt][1] = s_lo[nt][2] = s_lo[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        uint32_t b0, b1;
        KeyPairs<kType>(kw, ks, b0, b1);
        if constexpr (kQuantized) {
          MmaF16(s[nt], qhi[ks], b0, b1);
          MmaF16(s_lo[nt], qlo[ks], b0, b1);  // a second chain: half the dependent MMAs each
        } else {
          MmaBf16(s[nt], qhi[ks], b0, b1);
          MmaBf16(s_lo[nt], qlo[ks], b0, b1);
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) s[nt][i] += s_lo[nt][i];
    }
    // Scale and offset; mask keys past the split. C layout: s[nt][i] is row g + 8 (i / 2), key
    // nt * 8 + 2t + i % 2.
    float2 vp[2][2];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int key = nt * 8 + 2 * t + c;
        const float2 kp = kQuantized ? kparams[key] : make_float2(1.0f, 0.0f);
        vp[nt][c] = kQuantized ? vparams[key] : make_float2(1.0f, 0.0f);
        const bool valid = key0 + key < end;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float& x = s[nt][2 * h + c];
          x = valid ? fmaf(kp.y, qsum[h], x * (kp.x * inv_pow2[h])) : -INFINITY;
        }
      }
    }
    // Online softmax per row (the quad of lanes t = 0..3 shares a row).
    uint32_t pa[4], pl[4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (h >= kRowHalves) {  // padding rows: no weights
        pa[h] = pl[h] = pa[2 + h] = pl[2 + h] = 0;
        continue;
      }
      float mx = fmaxf(fmaxf(s[0][2 * h], s[0][2 * h + 1]), fmaxf(s[1][2 * h], s[1][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      const float base = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet
      const float corr = exp2f(m[h] - base);
      m[h] = m_new;
      float p[2][2], sum = 0.0f, zsum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float w = exp2f(s[nt][2 * h + c] - base);
          sum += w;
          if constexpr (kHasZero) zsum = fmaf(w, vp[nt][c].y, zsum);
          p[nt][c] = w * vp[nt][c].x;
        }
      }
      l[h] = l[h] * corr + sum;  // this lane's keys; the quad is summed at the end
      if constexpr (kHasZero) zacc[h] = zacc[h] * corr + zsum;
      if (__any_sync(0xffffffffu, corr != 1.0f)) {
#pragma unroll
        for (int nd = 0; nd < kNTiles; ++nd) {
          o[nd][2 * h] *= corr;
          o[nd][2 * h + 1] *= corr;
        }
      }
      // A fragment of P: (row g + 8h, keys 2t, 2t+1) from n-tile 0, (keys 2t+8, 2t+9) from 1.
      SplitBf16(p[0][0], p[0][1], pa[h], pl[h]);
      SplitBf16(p[1][0], p[1][1], pa[2 + h], pl[2 + h]);
    }
    // O += P V: lane (g, t) loads keys 2t, 2t+1, 2t+8, 2t+9, dims [g D/8, (g+1) D/8).
    uint32_t v0[Shape::kVLaneBytes / 4], v1[Shape::kVLaneBytes / 4], v8[Shape::kVLaneBytes / 4],
        v9[Shape::kVLaneBytes / 4];
    const uint8_t* vbase = sv + g * Shape::kVLaneBytes;
    LoadShared<Shape::kVLaneBytes>(v0, vbase + (2 * t) * Shape::kStride);
    LoadShared<Shape::kVLaneBytes>(v1, vbase + (2 * t + 1) * Shape::kStride);
    LoadShared<Shape::kVLaneBytes>(v8, vbase + (2 * t + 8) * Shape::kStride);
    LoadShared<Shape::kVLaneBytes>(v9, vbase + (2 * t + 9) * Shape::kStride);
#pragma unroll
    for (int nd = 0; nd < kNTiles; ++nd) {
      const uint32_t b0 = ValuePair<kType>(v0, v1, nd);
      const uint32_t b1 = ValuePair<kType>(v8, v9, nd);
      MmaBf16(o[nd], pa, b0, b1);
      MmaBf16(o[nd], pl, b0, b1);
    }
  }
  CpAsyncWait<0>();

  // Per warp: the quad's sums; then the warps merged through shared memory (the ring is free).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    if constexpr (kHasZero) {
      zacc[h] += __shfl_xor_sync(0xffffffffu, zacc[h], 1);
      zacc[h] += __shfl_xor_sync(0xffffffffu, zacc[h], 2);
    }
  }
  __syncthreads();                                // every warp is done with the ring
  float* s_acc = reinterpret_cast<float*>(smem);  // [warp][16 rows][kAccStride]
  float* s_m = s_acc + kDecodeWarps * 16 * Shape::kAccStride;
  float* s_l = s_m + kDecodeWarps * 16;
#pragma unroll
  for (int h = 0; h < kRowHalves; ++h) {
    const int row = g + 8 * h;
    float* dst = s_acc + (warp * 16 + row) * Shape::kAccStride;
#pragma unroll
    for (int nd = 0; nd < kNTiles; ++nd) {
      dst[(2 * t) * (kHeadDim / 8) + nd] = o[nd][2 * h] + zacc[h];
      dst[(2 * t + 1) * (kHeadDim / 8) + nd] = o[nd][2 * h + 1] + zacc[h];
    }
    if (t == 0) {
      s_m[warp * 16 + row] = m[h];
      s_l[warp * 16 + row] = l[h];
    }
  }
  __syncthreads();
  StoreDecodeBlockResult<kHeadDim>(a, s_acc, Shape::kAccStride, s_m, s_l, 16, heads_here, head0, e,
                                   t_tok);
}

template <int kHeadDim, KvDtype kType, bool kRows16, int kMinBlocks>
auto MmaKernel() {
  return DecodeMmaKernel<kHeadDim, kType, kRows16, kMinBlocks>;
}

template <int kHeadDim, KvDtype kType, bool kRows16, int kMinBlocks>
int Prepare() {  // the shared-memory opt-in (once) and the resident blocks per SM
  static const int blocks = [] {
    constexpr int kBytes = MmaShape<kHeadDim, kType>::kSharedBytes;
    const auto kernel = MmaKernel<kHeadDim, kType, kRows16, kMinBlocks>();
    int n = 0;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes) !=
            cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kDecodeWarps * 32, kBytes) !=
            cudaSuccess) {
      cudaGetLastError();
      n = 1;
    }
    return std::max(n, 1);
  }();
  return blocks;
}

struct MmaDispatch {
  bool launch;
  const DecodeArgs* args;
  dim3 grid;
  cudaStream_t stream;
  int resident = 0;
  template <int kHeadDim, KvDtype kType, bool kRows16, int kMinBlocks>
  void Run() {
    resident = Prepare<kHeadDim, kType, kRows16, kMinBlocks>();
    if (launch) {
      (void)LaunchDependent(MmaKernel<kHeadDim, kType, kRows16, kMinBlocks>(), grid,
                            dim3(kDecodeWarps * 32), MmaShape<kHeadDim, kType>::kSharedBytes,
                            stream, 1, *args);  // the caller checks cudaGetLastError
    }
  }
  // Sixteen heads need their registers: two blocks per SM.
  template <int kHeadDim, KvDtype kType>
  void ForRows(bool rows16, int min_blocks) {
    if (rows16) return Run<kHeadDim, kType, true, 2>();
    return min_blocks == 2 ? Run<kHeadDim, kType, false, 2>() : Run<kHeadDim, kType, false, 3>();
  }
  template <int kHeadDim>
  void ForDtype(KvDtype dtype, bool rows16, int min_blocks) {
    if (dtype == KvDtype::kBf16) return ForRows<kHeadDim, KvDtype::kBf16>(rows16, min_blocks);
    return dtype == KvDtype::kInt8 ? ForRows<kHeadDim, KvDtype::kInt8>(rows16, min_blocks)
                                   : ForRows<kHeadDim, KvDtype::kInt4>(rows16, min_blocks);
  }
  void ForHeadDim(int head_dim, KvDtype dtype, bool rows16, int min_blocks) {
    return head_dim == 64 ? ForDtype<64>(dtype, rows16, min_blocks)
                          : ForDtype<128>(dtype, rows16, min_blocks);
  }
};

}  // namespace

bool DecodeMmaSupports(int head_dim, KvDtype dtype) {
  return (head_dim == 64 || head_dim == 128) &&
         (dtype == KvDtype::kBf16 || dtype == KvDtype::kInt8 || dtype == KvDtype::kInt4);
}

void LaunchDecodeMma(int head_dim, int heads_per_block, int min_blocks, KvDtype dtype,
                     const DecodeArgs& args, dim3 grid, cudaStream_t stream) {
  MmaDispatch d{true, &args, grid, stream};
  d.ForHeadDim(head_dim, dtype, heads_per_block > 8, min_blocks);
}

int DecodeMmaResidentBlocksPerSm(int head_dim, int heads_per_block, int min_blocks, KvDtype dtype) {
  MmaDispatch d{false, nullptr, dim3(), nullptr};
  d.ForHeadDim(head_dim, dtype, heads_per_block > 8, min_blocks);
  return d.resident;
}

}  // namespace bitserve::cuda::paged_attention
