// The GEMV kernel templates (ternary_gemv.cuh describes them), shared by the plain products
// (ternary_gemv.cu) and the grouped ones of mixture-of-experts layers (ternary_grouped_gemv.cu),
// which instantiate them with kGrouped: block z then takes one work item (an expert and a run of
// grouped rows) from the device, so one launch covers every active expert.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"

namespace bitserve::cuda::internal {

using GemvArgs = internal::TernaryProductArgs;

// `token` indexes the output rows, `source` the activation rows (they differ in a grouped
// product whose inputs are gathered, ExpertGroupsArgs::source_rows).
__device__ __forceinline__ void Store(const GemvArgs& a, int token, int source, int row,
                                      int code_dot) {
  internal::StoreProduct(a, static_cast<int64_t>(token) * a.rows + row,
                         code_dot - a.x_sum[source],  // codes are w + 1
                         a.acc == nullptr ? a.x_scale[source] : 0.0f);
}

// Both kernels stream weights through a register software pipeline: the next batch of 16-byte
// weight loads is issued before the current batch's arithmetic. Without it ptxas sinks every load
// to just before its first use (seen in the SASS of the first version: one LDG.128 in flight per
// lane), and small matrices reached only ~2 TB/s.

// dp4a: block = one 16-row tile; warp w takes k-tiles w, w + kWarps, ... (so the block reads
// kWarps consecutive 512-byte tiles at a time), kUnroll tiles per batch. Lane (g, t) accumulates
// rows g and g+8 over inputs 16t.. of each 64-input chunk; shuffles over t and shared memory over
// warps finish the sums.
template <int kM, int kWarps, int kUnroll, bool kGrouped = false>
__global__ void __launch_bounds__(kWarps * 32) GemvDp4aKernel(GemvArgs a, ExpertGroupsArgs groups) {
  static_assert(!kGrouped || kM == 1, "a grouped dp4a product takes one row per item");
  int first = 0;
  if constexpr (kGrouped) {
    first = ResolveGroupItem(groups, a);
    if (first < 0) return;
  }
  const int source0 = SourceRow<kGrouped>(groups, first, 0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row_tile = blockIdx.x;
  const uint4* w = a.w + static_cast<int64_t>(row_tile) * a.k_tiles * 32 + lane;
  const int8_t* x = a.x + static_cast<int64_t>(source0) * a.x_stride + 16 * t;

  int acc[kM][2];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m][0] = acc[m][1] = 0;

  auto load = [&](int kt0, auto count, uint4* wv) {
#pragma unroll
    for (int u = 0; u < decltype(count)::value; ++u) {
      wv[u] = LoadWeightsStreaming(w + static_cast<int64_t>(kt0 + u * kWarps) * 32);
    }
  };
  auto compute = [&](int kt0, auto count, const uint4* wv) {
    constexpr int kCount = decltype(count)::value;
    uint4 xv[kCount][kM][2];
#pragma unroll
    for (int u = 0; u < kCount; ++u) {
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        const int8_t* p = x + m * a.x_stride + static_cast<int64_t>(kt0 + u * kWarps) * 128;
        xv[u][m][0] = LoadActivations(p);
        xv[u][m][1] = LoadActivations(p + 64);
      }
    }
#pragma unroll
    for (int u = 0; u < kCount; ++u) {
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        acc[m][0] = Dot16(wv[u].x, xv[u][m][0], acc[m][0]);
        acc[m][0] = Dot16(wv[u].z, xv[u][m][1], acc[m][0]);
        acc[m][1] = Dot16(wv[u].y, xv[u][m][0], acc[m][1]);
        acc[m][1] = Dot16(wv[u].w, xv[u][m][1], acc[m][1]);
      }
    }
  };
  constexpr std::integral_constant<int, kUnroll> kBatch;
  constexpr std::integral_constant<int, 1> kOne;
  constexpr int kStep = kUnroll * kWarps;
  int kt = warp;
  const bool batched = kt + (kUnroll - 1) * kWarps < a.k_tiles;
  uint4 cur[kUnroll];
  if (batched) load(kt, kBatch, cur);  // weights only: before the wait (pdl.cuh)
  WaitForPrerequisites();
  AllowDependentLaunch();
  if (batched) {
    while (true) {
      const bool more = kt + kStep + (kUnroll - 1) * kWarps < a.k_tiles;
      uint4 next[kUnroll] = {};
      if (more) load(kt + kStep, kBatch, next);
      compute(kt, kBatch, cur);
      kt += kStep;
      if (!more) break;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) cur[u] = next[u];
    }
  }
  for (; kt < a.k_tiles; kt += kWarps) {
    uint4 one[1];
    load(kt, kOne, one);
    compute(kt, kOne, one);
  }

  __shared__ int partial[kWarps][kM][16];
#pragma unroll
  for (int m = 0; m < kM; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], 1);
      acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], 2);
    }
    if (t == 0) {
      partial[warp][m][g] = acc[m][0];
      partial[warp][m][g + 8] = acc[m][1];
    }
  }
  __syncthreads();
  if (threadIdx.x < kM * 16) {
    const int m = threadIdx.x / 16, r = threadIdx.x % 16;
    int sum = 0;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) sum += partial[i][m][r];
    const int row = row_tile * 16 + r;
    if (row < a.rows) Store(a, m, source0 + m, row, sum);
  }
}

// mma: block = (kRT * kRW) row tiles x (8 * kNT) tokens with kRT * kKS warps; warp (rt, ks) owns
// kRW consecutive row tiles and streams them over k-tiles ks, ks + kKS, ... . Per k-tile a lane
// loads its token's B fragments once (16 activation bytes per 8-token tile and 64-input chunk,
// straight into registers: the layout makes them the fragment) and reuses them for all kRW row
// tiles; each weight uint4 is unpacked once into the A fragments of four k32-steps. kRW > 1 cuts
// the activation traffic through L1 per weight byte, the limit from ~16 tokens up.
template <int kNT, int kRT, int kRW, int kKS, int kUnroll, bool kGrouped = false>
__global__ void __launch_bounds__(kRT* kKS * 32)
    GemvMmaKernel(GemvArgs a, ExpertGroupsArgs groups) {
  int first = 0;
  if constexpr (kGrouped) {
    first = ResolveGroupItem(groups, a);
    // Past the item, or past its rows (an item of more rows than a block takes several blocks).
    if (first < 0 || static_cast<int>(blockIdx.x) * 8 * kNT >= a.m) return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int rt_local = warp % kRT, ks = warp / kRT;
  const int tile0 = (blockIdx.y * kRT + rt_local) * kRW;  // first row tile of this warp
  const int token0 = blockIdx.x * (8 * kNT);

  __shared__ int4 partial[kKS > 1 ? kRT * kRW * kNT * 32 : 1];
  if constexpr (kKS > 1) {
    for (int i = threadIdx.x; i < kRT * kRW * kNT * 32; i += blockDim.x) {
      partial[i] = make_int4(0, 0, 0, 0);
    }
    __syncthreads();
  }

  const uint4* w[kRW];
  bool tile_ok[kRW];
#pragma unroll
  for (int r = 0; r < kRW; ++r) {
    tile_ok[r] = tile0 + r < a.row_tiles;
    // Past the last row tile a warp re-reads the last one (valid memory) and drops the result.
    const int tile = tile_ok[r] ? tile0 + r : a.row_tiles - 1;
    w[r] = a.w + static_cast<int64_t>(tile) * a.k_tiles * 32 + lane;
  }
  const int8_t* xrow[kNT];  // this lane's token (g) of each 8-token tile; null past the end
#pragma unroll
  for (int n = 0; n < kNT; ++n) {
    const int token = token0 + 8 * n + g;
    xrow[n] =
        token < a.m
            ? a.x + static_cast<int64_t>(SourceRow<kGrouped>(groups, first, token)) * a.x_stride +
                  16 * t
            : nullptr;
  }

  int acc[kRW][kNT][4];
#pragma unroll
  for (int r = 0; r < kRW; ++r) {
#pragma unroll
    for (int n = 0; n < kNT; ++n) acc[r][n][0] = acc[r][n][1] = acc[r][n][2] = acc[r][n][3] = 0;
  }

  auto load = [&](int kt0, auto count, uint4(*wv)[kRW]) {
#pragma unroll
    for (int u = 0; u < decltype(count)::value; ++u) {
#pragma unroll
      for (int r = 0; r < kRW; ++r) {
        wv[u][r] = LoadWeightsStreaming(w[r] + static_cast<int64_t>(kt0 + u * kKS) * 32);
      }
    }
  };
  auto compute = [&](int kt0, auto count, const uint4(*wv)[kRW]) {
#pragma unroll
    for (int u = 0; u < decltype(count)::value; ++u) {
      const int64_t offset = static_cast<int64_t>(kt0 + u * kKS) * 128;
      uint4 xv[kNT][2];
#pragma unroll
      for (int n = 0; n < kNT; ++n) {
        xv[n][0] = xv[n][1] = make_uint4(0, 0, 0, 0);
        if (xrow[n] != nullptr) {
          xv[n][0] = LoadActivations(xrow[n] + offset);
          xv[n][1] = LoadActivations(xrow[n] + offset + 64);
        }
      }
#pragma unroll
      for (int r = 0; r < kRW; ++r) {
        uint32_t af[4][4];
        UnpackFragments(wv[u][r], af);
#pragma unroll
        for (int n = 0; n < kNT; ++n) {
          MmaS8(acc[r][n], af[0], xv[n][0].x, xv[n][0].y);
          MmaS8(acc[r][n], af[1], xv[n][0].z, xv[n][0].w);
          MmaS8(acc[r][n], af[2], xv[n][1].x, xv[n][1].y);
          MmaS8(acc[r][n], af[3], xv[n][1].z, xv[n][1].w);
        }
      }
    }
  };
  constexpr std::integral_constant<int, kUnroll> kBatch;
  constexpr std::integral_constant<int, 1> kOne;
  constexpr int kStep = kUnroll * kKS;
  // A warp past the last row tile reads no weights, but takes part in the sums and stores.
  const bool batched = tile_ok[0] && ks + (kUnroll - 1) * kKS < a.k_tiles;
  uint4 cur[kUnroll][kRW];
  if (batched) load(ks, kBatch, cur);  // weights only: before the wait (pdl.cuh)
  WaitForPrerequisites();
  AllowDependentLaunch();
  if (tile_ok[0]) {
    int kt = ks;
    if (batched) {
      while (true) {
        const bool more = kt + kStep + (kUnroll - 1) * kKS < a.k_tiles;
        uint4 next[kUnroll][kRW] = {};
        if (more) load(kt + kStep, kBatch, next);
        compute(kt, kBatch, cur);
        kt += kStep;
        if (!more) break;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
          for (int r = 0; r < kRW; ++r) cur[u][r] = next[u][r];
        }
      }
    }
    for (; kt < a.k_tiles; kt += kKS) {
      uint4 one[1][kRW];
      load(kt, kOne, one);
      compute(kt, kOne, one);
    }
  }

  if constexpr (kKS > 1) {
    // Split-K over the block's warps: shared-memory integer atomics (exact, order-free).
    if (ks > 0) {
#pragma unroll
      for (int r = 0; r < kRW; ++r) {
#pragma unroll
        for (int n = 0; n < kNT; ++n) {
          int* p = &partial[((rt_local * kRW + r) * kNT + n) * 32 + lane].x;
#pragma unroll
          for (int i = 0; i < 4; ++i) atomicAdd(p + i, acc[r][n][i]);
        }
      }
    }
    __syncthreads();
    if (ks > 0) return;
#pragma unroll
    for (int r = 0; r < kRW; ++r) {
#pragma unroll
      for (int n = 0; n < kNT; ++n) {
        const int4 v = partial[((rt_local * kRW + r) * kNT + n) * 32 + lane];
        acc[r][n][0] += v.x;
        acc[r][n][1] += v.y;
        acc[r][n][2] += v.z;
        acc[r][n][3] += v.w;
      }
    }
  }
  // Accumulator fragment: c0, c1 = row g, tokens 2t, 2t+1; c2, c3 = row g+8, same tokens.
#pragma unroll
  for (int r = 0; r < kRW; ++r) {
    if (!tile_ok[r]) continue;
#pragma unroll
    for (int n = 0; n < kNT; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int token = token0 + 8 * n + 2 * t + (i & 1);
        const int row = (tile0 + r) * 16 + g + 8 * (i >> 1);
        if (token < a.m && row < a.rows) {
          Store(a, token, SourceRow<kGrouped>(groups, first, token), row, acc[r][n][i]);
        }
      }
    }
  }
}

}  // namespace bitserve::cuda::internal
