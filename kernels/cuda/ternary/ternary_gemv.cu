#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"

namespace bitserve::cuda {
namespace {

using internal::Dot16;
using internal::LoadActivations;
using internal::LoadWeightsStreaming;
using internal::MmaS8;
using internal::ScaleOutput;
using internal::UnpackFragments;

using GemvArgs = internal::TernaryProductArgs;

__device__ __forceinline__ void Store(const GemvArgs& a, int token, int row, int code_dot) {
  internal::StoreProduct(a, static_cast<int64_t>(token) * a.rows + row,
                         code_dot - a.x_sum[token],  // codes are w + 1
                         a.acc == nullptr ? a.x_scale[token] : 0.0f);
}

// Both kernels stream weights through a register software pipeline: the next batch of 16-byte
// weight loads is issued before the current batch's arithmetic. Without it ptxas sinks every load
// to just before its first use (seen in the SASS of the first version: one LDG.128 in flight per
// lane), and small matrices reached only ~2 TB/s.

// dp4a: block = one 16-row tile; warp w takes k-tiles w, w + kWarps, ... (so the block reads
// kWarps consecutive 512-byte tiles at a time), kUnroll tiles per batch. Lane (g, t) accumulates
// rows g and g+8 over inputs 16t.. of each 64-input chunk; shuffles over t and shared memory over
// warps finish the sums.
template <int kM, int kWarps, int kUnroll>
__global__ void __launch_bounds__(kWarps * 32) GemvDp4aKernel(GemvArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row_tile = blockIdx.x;
  const uint4* w = a.w + static_cast<int64_t>(row_tile) * a.k_tiles * 32 + lane;
  const int8_t* x = a.x + 16 * t;

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
    if (row < a.rows) Store(a, m, row, sum);
  }
}

// mma: block = (kRT * kRW) row tiles x (8 * kNT) tokens with kRT * kKS warps; warp (rt, ks) owns
// kRW consecutive row tiles and streams them over k-tiles ks, ks + kKS, ... . Per k-tile a lane
// loads its token's B fragments once (16 activation bytes per 8-token tile and 64-input chunk,
// straight into registers: the layout makes them the fragment) and reuses them for all kRW row
// tiles; each weight uint4 is unpacked once into the A fragments of four k32-steps. kRW > 1 cuts
// the activation traffic through L1 per weight byte, the limit from ~16 tokens up.
template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
__global__ void __launch_bounds__(kRT* kKS * 32) GemvMmaKernel(GemvArgs a) {
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
    xrow[n] = token < a.m ? a.x + static_cast<int64_t>(token) * a.x_stride + 16 * t : nullptr;
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
        if (token < a.m && row < a.rows) Store(a, token, row, acc[r][n][i]);
      }
    }
  }
}

using LaunchFn = cudaError_t (*)(const GemvArgs&, cudaStream_t);

template <int kM, int kWarps, int kUnroll>
cudaError_t LaunchDp4a(const GemvArgs& a, cudaStream_t stream) {
  return LaunchDependent(GemvDp4aKernel<kM, kWarps, kUnroll>, dim3(a.row_tiles), dim3(kWarps * 32),
                         0, stream, 1, a);
}

template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
cudaError_t LaunchMma(const GemvArgs& a, cudaStream_t stream) {
  // Token blocks vary fastest, so the blocks that share a weight slice run together and all but
  // the first read it from L2.
  const dim3 grid((a.m + 8 * kNT - 1) / (8 * kNT), (a.row_tiles + kRT * kRW - 1) / (kRT * kRW));
  return LaunchDependent(GemvMmaKernel<kNT, kRT, kRW, kKS, kUnroll>, grid, dim3(kRT * kKS * 32), 0,
                         stream, 1, a);
}

struct Entry {
  TernaryGemvConfig config;
  LaunchFn launch;
};

template <int kM, int kWarps, int kUnroll>
Entry Dp4aEntry() {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kDp4a;
  c.tokens = kM;
  c.row_tiles = 1;
  c.k_split = kWarps;
  c.unroll = kUnroll;
  return {c, &LaunchDp4a<kM, kWarps, kUnroll>};
}

template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
Entry MmaEntry() {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kMma;
  c.tokens = 8 * kNT;
  c.row_tiles = kRT;
  c.warp_row_tiles = kRW;
  c.k_split = kKS;
  c.unroll = kUnroll;
  return {c, &LaunchMma<kNT, kRT, kRW, kKS, kUnroll>};
}

const std::vector<Entry>& Entries() {
  static const std::vector<Entry>* entries = new std::vector<Entry>{
      // dp4a, exact token counts
      Dp4aEntry<1, 8, 4>(),
      Dp4aEntry<1, 8, 2>(),
      Dp4aEntry<1, 4, 4>(),
      Dp4aEntry<2, 8, 2>(),
      Dp4aEntry<3, 8, 1>(),
      Dp4aEntry<4, 8, 1>(),
      // mma <n-tiles, warps along rows, row tiles per warp, split-K warps, unroll>
      MmaEntry<1, 1, 1, 8, 4>(),
      MmaEntry<1, 1, 1, 8, 2>(),
      MmaEntry<1, 1, 1, 4, 4>(),
      MmaEntry<1, 1, 2, 8, 2>(),
      MmaEntry<2, 1, 1, 8, 4>(),
      MmaEntry<2, 1, 1, 8, 2>(),
      MmaEntry<2, 2, 1, 4, 4>(),
      MmaEntry<2, 1, 2, 8, 2>(),
      MmaEntry<2, 1, 4, 8, 1>(),
      MmaEntry<2, 1, 4, 4, 1>(),
      MmaEntry<4, 1, 2, 8, 1>(),
      MmaEntry<4, 1, 2, 4, 2>(),
      MmaEntry<4, 2, 2, 4, 1>(),
      MmaEntry<8, 1, 2, 4, 1>(),
  };
  return *entries;
}

bool SameConfig(const TernaryGemvConfig& a, const TernaryGemvConfig& b) {
  return a.kind == b.kind && a.tokens == b.tokens && a.row_tiles == b.row_tiles &&
         a.warp_row_tiles == b.warp_row_tiles && a.k_split == b.k_split && a.unroll == b.unroll;
}

}  // namespace

std::string TernaryGemvConfig::Name() const {
  if (kind == Kind::kDp4a) return absl::StrCat("dp4a_m", tokens, "_w", k_split, "_u", unroll);
  return absl::StrCat("mma_t", tokens, "_r", row_tiles, "x", warp_row_tiles, "_k", k_split, "_u",
                      unroll);
}

const std::vector<TernaryGemvConfig>& AllTernaryGemvConfigs() {
  static const std::vector<TernaryGemvConfig>* configs = [] {
    auto* v = new std::vector<TernaryGemvConfig>;
    for (const Entry& e : Entries()) v->push_back(e.config);
    return v;
  }();
  return *configs;
}

namespace {

TernaryGemvConfig Dp4a(int tokens, int warps, int unroll) {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kDp4a;
  c.tokens = tokens;
  c.k_split = warps;
  c.unroll = unroll;
  return c;
}

TernaryGemvConfig Mma(int tokens, int row_warps, int warp_row_tiles, int k_split, int unroll) {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kMma;
  c.tokens = tokens;
  c.row_tiles = row_warps;
  c.warp_row_tiles = warp_row_tiles;
  c.k_split = k_split;
  c.unroll = unroll;
  return c;
}

}  // namespace

TernaryGemvConfig DefaultTernaryGemvConfig(const TernaryMatrixView& w, int64_t m) {
  // From bench/cuda/kernel_benchmark.cu (docs/perf.md). Shape traits decide:
  //   long_k: >= 48 k-tiles (6144+ inputs), so each of 8 split-K warps streams several tiles;
  //   many_rows: >= 8192 rows, enough blocks that fewer split-K warps per block win.
  // M = 1 and 2 (dp4a) and up to 8 tokens: H100, within 15% of the best compiled configuration
  // at every measured shape. 9 to 64 tokens: refitted on an H200 with `--products` (2B4T and 70B
  // shapes): few rows (<= 4,096) want 8-token blocks, so that the grid has enough blocks; 10,240+
  // rows want fewer split-K warps; within 10% of the best at 16 and 32 tokens except 3840x2560
  // at 32 (6.7 vs 5.4 us).
  const bool long_k = w.k_tiles() >= 48;
  const bool many_rows = w.row_tiles() >= 512;
  const bool few_rows = w.padded_rows <= 4096;
  const bool wide = w.padded_rows >= 10240;
  // M = 1, long_k stays at 2 tiles per batch: on the H200 kernel_benchmark (weights rotated,
  // back-to-back calls) preferred 4 for 70B down (18.1 vs 21.0 us) and o, but inside the engine's
  // decode step (ncu) the same change made them slower: o 7.2 -> 8.9 us, down 17.3 -> 18.6.
  if (m == 1) return long_k ? Dp4a(1, 8, 2) : (many_rows ? Dp4a(1, 4, 4) : Dp4a(1, 8, 4));
  if (m == 2 && long_k) return Dp4a(2, 8, 2);
  if (m <= 8) return (many_rows && !long_k) ? Mma(8, 1, 1, 4, 4) : Mma(8, 1, 1, 8, 2);
  if (few_rows && m <= 32) return Mma(8, 1, 1, 8, 2);
  if (m <= 16) {
    if (!long_k) return Mma(16, 1, 4, 8, 1);
    if (w.padded_rows >= 12288) return Mma(16, 1, 4, 4, 1);
    return wide ? Mma(16, 2, 1, 4, 4) : Mma(16, 1, 2, 8, 2);
  }
  if (m <= 32) {
    if (!long_k) return Mma(16, 1, 4, 4, 1);
    return wide ? Mma(32, 1, 2, 4, 2) : Mma(32, 1, 2, 8, 1);
  }
  if (w.k_tiles() >= 64) return wide ? Mma(32, 1, 2, 4, 2) : Mma(32, 2, 2, 4, 1);
  return many_rows ? Mma(16, 1, 4, 4, 1) : Mma(16, 2, 1, 4, 4);
}

absl::StatusOr<DeviceTernaryMatrix> DeviceTernaryMatrix::Upload(const PackedTernaryMatrix& packed) {
  DeviceTernaryMatrix m;
  auto words = DeviceBuffer<uint32_t>::Create(static_cast<int64_t>(packed.words.size()));
  if (!words.ok()) return words.status();
  m.words_ = std::move(words).value();
  if (absl::Status s = m.words_.CopyFromHost(packed.words.data(), packed.words.size()); !s.ok()) {
    return s;
  }
  m.view_.words = m.words_.get();
  m.view_.rows = packed.rows;
  m.view_.cols = packed.cols;
  m.view_.padded_rows = packed.padded_rows;
  m.view_.padded_cols = packed.padded_cols;
  m.view_.scale = packed.scale;
  return m;
}

absl::Status ValidateTernaryOperands(const TernaryMatrixView& w, const Int8Activations& x) {
  if (w.words == nullptr || w.rows <= 0 || w.cols <= 0 || w.padded_rows != PaddedRows(w.rows) ||
      w.padded_cols != PaddedInputs(w.cols)) {
    return absl::InvalidArgumentError(absl::StrCat("ternary matrix view is malformed: [", w.rows,
                                                   ", ", w.cols, "] padded [", w.padded_rows, ", ",
                                                   w.padded_cols, "]"));
  }
  if (w.padded_rows >= (int64_t{1} << 31) || w.padded_cols >= (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ternary matrix [", w.rows, ", ", w.cols, "] is too large for int32 sums"));
  }
  if (x.cols != w.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("activations have ", x.cols, " features, the matrix expects ", w.cols));
  }
  if (x.rows < 0 || x.rows >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat("bad token count ", x.rows));
  }
  if (x.stride < w.padded_cols || x.stride % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation stride ", x.stride, " must be a multiple of 16 and >= ", w.padded_cols,
        " (PaddedInputs(", w.cols, "))"));
  }
  if (reinterpret_cast<uintptr_t>(x.values) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.words) % 16 != 0) {
    return absl::InvalidArgumentError("ternary operands must be 16-byte aligned");
  }
  if (x.rows > 0 && (x.values == nullptr || x.scales == nullptr || x.sums == nullptr)) {
    return absl::InvalidArgumentError("activations need values, scales and sums");
  }
  return absl::OkStatus();
}

absl::Status TernaryGemvWithConfig(const TernaryGemvConfig& config, const TernaryMatrixView& w,
                                   const Int8Activations& x, float* y, int32_t* acc,
                                   cudaStream_t stream) {
  if (absl::Status s = ValidateTernaryOperands(w, x); !s.ok()) return s;
  if ((y == nullptr) == (acc == nullptr)) {
    return absl::InvalidArgumentError("ternary GEMV needs exactly one of the float/int32 outputs");
  }
  if (x.rows == 0) return absl::OkStatus();
  const Entry* entry = nullptr;
  for (const Entry& e : Entries()) {
    if (SameConfig(e.config, config)) entry = &e;
  }
  if (entry == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ternary GEMV configuration ", config.Name(), " is not compiled in"));
  }
  if (config.kind == TernaryGemvConfig::Kind::kDp4a && config.tokens != x.rows) {
    return absl::InvalidArgumentError(absl::StrCat("configuration ", config.Name(),
                                                   " is for exactly ", config.tokens,
                                                   " tokens, got ", x.rows));
  }
  const GemvArgs a = internal::MakeTernaryProductArgs(w, x, y, acc);
  BITSERVE_CUDA_RETURN_IF_ERROR(entry->launch(a, stream));
  return absl::OkStatus();
}

absl::Status TernaryGemv(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                         cudaStream_t stream) {
  return TernaryGemvWithConfig(DefaultTernaryGemvConfig(w, x.rows), w, x, y, nullptr, stream);
}

absl::Status TernaryGemvInt32(const TernaryMatrixView& w, const Int8Activations& x, int32_t* acc,
                              cudaStream_t stream) {
  return TernaryGemvWithConfig(DefaultTernaryGemvConfig(w, x.rows), w, x, nullptr, acc, stream);
}

}  // namespace bitserve::cuda
