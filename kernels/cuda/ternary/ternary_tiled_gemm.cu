#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cp_async.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_info.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"
#include "kernels/cuda/ternary/ternary_tiled_gemm.cuh"
#include "kernels/cuda/ternary/ternary_tiled_internal.cuh"

namespace bitserve::cuda {
namespace {

using internal::CpAsync16;
using internal::CpAsyncCommit;
using internal::CpAsyncWait;
using internal::ExpertGroupsArgs;
using internal::MmaS8;
using internal::ResolveGroupItem;
using internal::SourceRow;
using internal::StoreProduct;
using internal::TernaryProductArgs;
using internal::UnpackFragments;

constexpr int kTileBytes = 512;   // one packed 16 x 128 weight tile (ternary_layout.h)
constexpr int kKTileBytes = 128;  // one token's activations per k-tile

// Where 16-byte chunk c (0..7) of token row n's k-tile lies in shared memory. Lane (g, t) reads
// chunks t and 4 + t of row g (+ 8j): odd rows swap the halves, so each quarter-warp's 8 loads
// cover all 32 banks.
__device__ __forceinline__ int ActChunkOffset(int n, int c) {
  return n * kKTileBytes + ((c ^ ((n & 1) << 2)) << 4);
}

template <int kWR, int kWN, int kRT, int kNT, int kStages>
struct TiledShape {
  static constexpr int kThreads = kWR * kWN * 32;
  static constexpr int kBlockRowTiles = kWR * kRT;
  static constexpr int kBlockTokens = kWN * kNT * 8;
  static constexpr int kWeightBytes = kBlockRowTiles * kTileBytes;
  static constexpr int kStageBytes = kWeightBytes + kBlockTokens * kKTileBytes;
  static constexpr int kSharedBytes = kStages * kStageBytes;
};

// kGrouped: block z takes work item z of a grouped product (ternary_kernel_common.cuh
// ResolveGroupItem), blocks along x its runs of kBlockTokens rows.
template <int kWR, int kWN, int kRT, int kNT, int kStages, int kMinBlocks, bool kGrouped = false>
__global__ void __launch_bounds__(kWR* kWN * 32, kMinBlocks)
    TernaryTiledKernel(TernaryProductArgs a, ExpertGroupsArgs groups) {
  using S = TiledShape<kWR, kWN, kRT, kNT, kStages>;
  int first = 0;
  if constexpr (kGrouped) {
    first = ResolveGroupItem(groups, a);
    if (first < 0 || static_cast<int>(blockIdx.x) * S::kBlockTokens >= a.m) return;
  }
  extern __shared__ __align__(128) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int warp_r = warp % kWR, warp_n = warp / kWR;
  const int token0 = blockIdx.x * S::kBlockTokens;
  const int tile0 = blockIdx.y * S::kBlockRowTiles;

  // Sources of this thread's cp.async chunks for k-tile 0; later k-tiles add a fixed step.
  // Row tiles past the matrix and tokens past m are zero-filled; their results are never stored.
  constexpr int kWeightChunks = S::kBlockRowTiles * 32;
  constexpr int kActChunks = S::kBlockTokens * 8;
  static_assert(kActChunks % S::kThreads == 0);
  constexpr int kWeightPerThread = (kWeightChunks + S::kThreads - 1) / S::kThreads;
  // Threads past the weight chunks (blocks of few row tiles) load the last chunk twice.
  constexpr int kActPerThread = kActChunks / S::kThreads;
  const uint8_t* w_src[kWeightPerThread];
  int w_dst[kWeightPerThread];
  bool w_ok[kWeightPerThread];
#pragma unroll
  for (int i = 0; i < kWeightPerThread; ++i) {
    const int chunk = min(static_cast<int>(threadIdx.x) + i * S::kThreads, kWeightChunks - 1);
    w_ok[i] = tile0 + chunk / 32 < a.row_tiles;
    const int tile = min(tile0 + chunk / 32, a.row_tiles - 1);
    w_src[i] = reinterpret_cast<const uint8_t*>(a.w) +
               static_cast<int64_t>(tile) * a.k_tiles * kTileBytes + (chunk % 32) * 16;
    w_dst[i] = chunk * 16;
  }
  const int8_t* x_src[kActPerThread];
  int x_dst[kActPerThread];
  bool x_ok[kActPerThread];
#pragma unroll
  for (int i = 0; i < kActPerThread; ++i) {
    const int chunk = threadIdx.x + i * S::kThreads;
    const int n = chunk / 8, c = chunk % 8;
    x_ok[i] = token0 + n < a.m;
    const int token = SourceRow<kGrouped>(groups, first, min(token0 + n, a.m - 1));
    x_src[i] = a.x + static_cast<int64_t>(token) * a.x_stride + c * 16;
    x_dst[i] = S::kWeightBytes + ActChunkOffset(n, c);
  }
  auto load_stage = [&](int kt) {
    uint8_t* stage = smem + (kt % kStages) * S::kStageBytes;
#pragma unroll
    for (int i = 0; i < kWeightPerThread; ++i) {
      CpAsync16(stage + w_dst[i], w_src[i] + static_cast<int64_t>(kt) * kTileBytes,
                w_ok[i] ? 16 : 0);
    }
#pragma unroll
    for (int i = 0; i < kActPerThread; ++i) {
      CpAsync16(stage + x_dst[i], x_src[i] + static_cast<int64_t>(kt) * kKTileBytes,
                x_ok[i] ? 16 : 0);
    }
  };

  int acc[kRT][kNT][4];
#pragma unroll
  for (int r = 0; r < kRT; ++r) {
#pragma unroll
    for (int j = 0; j < kNT; ++j) acc[r][j][0] = acc[r][j][1] = acc[r][j][2] = acc[r][j][3] = 0;
  }

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < a.k_tiles) load_stage(s);
    CpAsyncCommit();
  }
  const int swizzle = (g & 1) << 2;
  for (int kt = 0; kt < a.k_tiles; ++kt) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // k-tile kt is in; every warp is done with the slot loaded next

    // This k-tile's fragments first, then the next stage's copies: queued ahead of these shared
    // memory loads, the copies would delay the MMAs.
    const uint8_t* stage = smem + (kt % kStages) * S::kStageBytes;
    const uint8_t* xs = stage + S::kWeightBytes;
    uint4 b[kNT][2];
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      const int n = (warp_n * kNT + j) * 8 + g;
      b[j][0] = *reinterpret_cast<const uint4*>(xs + n * kKTileBytes + ((t ^ swizzle) << 4));
      b[j][1] = *reinterpret_cast<const uint4*>(xs + n * kKTileBytes + (((4 + t) ^ swizzle) << 4));
    }
    uint4 wv[kRT];
#pragma unroll
    for (int r = 0; r < kRT; ++r) {
      wv[r] = *reinterpret_cast<const uint4*>(stage + (warp_r * kRT + r) * kTileBytes + lane * 16);
    }
    if (kt + kStages - 1 < a.k_tiles) load_stage(kt + kStages - 1);
    CpAsyncCommit();

#pragma unroll
    for (int r = 0; r < kRT; ++r) {
      uint32_t af[4][4];
      UnpackFragments(wv[r], af);
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        MmaS8(acc[r][j], af[0], b[j][0].x, b[j][0].y);
        MmaS8(acc[r][j], af[1], b[j][0].z, b[j][0].w);
        MmaS8(acc[r][j], af[2], b[j][1].x, b[j][1].y);
        MmaS8(acc[r][j], af[3], b[j][1].z, b[j][1].w);
      }
    }
  }
  CpAsyncWait<0>();

  // Accumulator fragment: c0, c1 = row g, tokens 2t, 2t+1; c2, c3 = row g+8, same tokens.
#pragma unroll
  for (int j = 0; j < kNT; ++j) {
#pragma unroll
    for (int col = 0; col < 2; ++col) {
      const int token = token0 + (warp_n * kNT + j) * 8 + 2 * t + col;
      if (token >= a.m) continue;
      const int source = SourceRow<kGrouped>(groups, first, token);
      const int x_sum = a.x_sum[source];
      const float x_scale = a.acc == nullptr ? a.x_scale[source] : 0.0f;
      const int64_t out_row = static_cast<int64_t>(token) * a.rows;
#pragma unroll
      for (int r = 0; r < kRT; ++r) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = (tile0 + warp_r * kRT + r) * 16 + g + 8 * half;
          if (row >= a.rows) continue;
          // Codes are w + 1.
          StoreProduct(a, out_row + row, acc[r][j][2 * half + col] - x_sum, x_scale);
        }
      }
    }
  }
}

using LaunchFn = cudaError_t (*)(const TernaryProductArgs&, cudaStream_t);

template <int kWR, int kWN, int kRT, int kNT, int kStages, int kMinBlocks>
cudaError_t Launch(const TernaryProductArgs& a, cudaStream_t stream) {
  using S = TiledShape<kWR, kWN, kRT, kNT, kStages>;
  auto* kernel = &TernaryTiledKernel<kWR, kWN, kRT, kNT, kStages, kMinBlocks>;
  // Raised once per kernel (before any graph capture: the engine runs each shape plainly first).
  static const cudaError_t attribute =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSharedBytes);
  if (attribute != cudaSuccess) return attribute;
  // Token blocks vary fastest: the blocks that share a weight slice run together, so all but
  // the first read it from L2.
  const dim3 grid((a.m + S::kBlockTokens - 1) / S::kBlockTokens,
                  (a.row_tiles + S::kBlockRowTiles - 1) / S::kBlockRowTiles);
  kernel<<<grid, S::kThreads, S::kSharedBytes, stream>>>(a, ExpertGroupsArgs{});
  return cudaGetLastError();
}

struct Entry {
  TernaryTiledConfig config;
  LaunchFn launch;
};

template <int kWarpgroups, int kTokens, int kStages, int kMinBlocks>
cudaError_t LaunchWgmma(const TernaryProductArgs& a, cudaStream_t stream) {
  return internal::LaunchTernaryWgmma(kWarpgroups, kTokens, kStages, kMinBlocks, a, stream);
}

template <int kWarpgroups, int kTokens, int kStages, int kMinBlocks = 1>
Entry MakeWgmmaEntry() {
  TernaryTiledConfig c{4 * kWarpgroups, 1, 1, kTokens / 8, kStages, kMinBlocks};
  c.wgmma = true;
  return {c, &LaunchWgmma<kWarpgroups, kTokens, kStages, kMinBlocks>};
}

template <int kWR, int kWN, int kRT, int kNT, int kStages, int kMinBlocks = 1>
Entry MakeEntry() {
  return {TernaryTiledConfig{kWR, kWN, kRT, kNT, kStages, kMinBlocks},
          &Launch<kWR, kWN, kRT, kNT, kStages, kMinBlocks>};
}

const std::vector<Entry>& Entries() {
  static const std::vector<Entry>* entries = [] {
    auto* v = new std::vector<Entry>{
        // <warps along rows, warps along tokens, row tiles per warp, 8-token tiles per warp,
        //  stages>; bench/cuda/kernel_benchmark.cu --products compared 128 x 128 (8 warps, 3 and
        // 4 stages, 1 and 2 blocks per SM), 64 x 128 and 256 x 64 too: never the best.
        MakeEntry<2, 2, 4, 4, 4>(),  // 128 rows x 64 tokens, 4 warps
        MakeEntry<4, 2, 2, 4, 4>(),  // 128 x 64, 8 warps
        MakeEntry<2, 2, 4, 2, 4>(),  // 128 x 32, 4 warps
    };
    if (internal::WgmmaCompiled()) {
      // <warpgroups (64 rows each), tokens, stages, blocks per multiprocessor>; 128 x 128 (1 and
      // 2 blocks per SM) and 128 x 256 were slower everywhere.
      v->push_back(MakeWgmmaEntry<4, 128, 4>());
      v->push_back(MakeWgmmaEntry<4, 64, 4>());
      v->push_back(MakeWgmmaEntry<2, 64, 4, 2>());
    }
    return v;
  }();
  return *entries;
}

using GroupedLaunchFn = cudaError_t (*)(const TernaryProductArgs&, const ExpertGroupsArgs&,
                                        int rows_per_item, int max_items, cudaStream_t);

// Grid: x = the token blocks of an item (rows_per_item / block tokens; a block past its item's
// rows returns at once), y = row blocks, z = work items.
template <int kWR, int kWN, int kRT, int kNT, int kStages>
cudaError_t LaunchGroupedTiledShape(const TernaryProductArgs& a, const ExpertGroupsArgs& g,
                                    int rows_per_item, int max_items, cudaStream_t stream) {
  using S = TiledShape<kWR, kWN, kRT, kNT, kStages>;
  auto* kernel = &TernaryTiledKernel<kWR, kWN, kRT, kNT, kStages, 1, true>;
  static const cudaError_t attribute =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSharedBytes);
  if (attribute != cudaSuccess) return attribute;
  if (rows_per_item % S::kBlockTokens != 0) return cudaErrorInvalidValue;
  const dim3 grid(rows_per_item / S::kBlockTokens,
                  (a.row_tiles + S::kBlockRowTiles - 1) / S::kBlockRowTiles, max_items);
  kernel<<<grid, S::kThreads, S::kSharedBytes, stream>>>(a, g);
  return cudaGetLastError();
}

struct GroupedEntry {
  TernaryTiledConfig config;
  GroupedLaunchFn launch;
};

template <int kWR, int kWN, int kRT, int kNT, int kStages>
GroupedEntry MakeGroupedEntry() {
  return {TernaryTiledConfig{kWR, kWN, kRT, kNT, kStages, 1},
          &LaunchGroupedTiledShape<kWR, kWN, kRT, kNT, kStages>};
}

// An item's rows are padded to whole token blocks, so a block of fewer tokens wastes fewer MMAs
// on an expert's last, partly filled block (at 64 rows an expert on average, 64-token blocks
// compute ~1.5 blocks per expert) but unpacks each weight tile for fewer tokens.
const std::vector<GroupedEntry>& GroupedEntries() {
  static const std::vector<GroupedEntry>* entries = new std::vector<GroupedEntry>{
      MakeGroupedEntry<2, 2, 4, 4, 4>(),  // 128 rows x 64 tokens, 4 warps
      MakeGroupedEntry<4, 2, 2, 4, 4>(),  // 128 x 64, 8 warps
      MakeGroupedEntry<2, 2, 4, 2, 4>(),  // 128 x 32, 4 warps
      MakeGroupedEntry<4, 2, 2, 2, 4>(),  // 128 x 32, 8 warps
      MakeGroupedEntry<4, 1, 2, 2, 4>(),  // 128 x 16, 4 warps
  };
  return *entries;
}

}  // namespace

namespace internal {

const std::vector<TernaryTiledConfig>& GroupedTiledConfigs() {
  static const std::vector<TernaryTiledConfig>* configs = [] {
    auto* v = new std::vector<TernaryTiledConfig>;
    for (const GroupedEntry& e : GroupedEntries()) v->push_back(e.config);
    return v;
  }();
  return *configs;
}

cudaError_t LaunchGroupedTiled(const TernaryTiledConfig& config, const TernaryProductArgs& a,
                               const ExpertGroupsArgs& g, int rows_per_item, int max_items,
                               cudaStream_t stream) {
  for (const GroupedEntry& e : GroupedEntries()) {
    if (e.config == config) return e.launch(a, g, rows_per_item, max_items, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace internal

bool WgmmaAvailable() {
  if (!internal::WgmmaCompiled()) return false;
  const CurrentDeviceTraits device = GetCurrentDeviceTraits();
  return device.compute_major == 9 && device.compute_minor == 0;
}

#if !BITSERVE_WITH_WGMMA
namespace internal {
bool WgmmaCompiled() { return false; }
cudaError_t LaunchTernaryWgmma(int, int, int, int, const TernaryProductArgs&, cudaStream_t) {
  return cudaErrorNotSupported;
}
}  // namespace internal
#endif

std::string TernaryTiledConfig::Name() const {
  if (wgmma) {
    return absl::StrCat("wgmma_", block_rows(), "x", block_tokens(), "_s", stages,
                        min_blocks > 1 ? absl::StrCat("_b", min_blocks) : "");
  }
  return absl::StrCat("tiled_", block_rows(), "x", block_tokens(), "_w", row_warps, "x",
                      token_warps, "_s", stages,
                      min_blocks > 1 ? absl::StrCat("_b", min_blocks) : "");
}

const std::vector<TernaryTiledConfig>& AllTernaryTiledConfigs() {
  static const std::vector<TernaryTiledConfig>* configs = [] {
    auto* v = new std::vector<TernaryTiledConfig>;
    for (const Entry& e : Entries()) v->push_back(e.config);
    return v;
  }();
  return *configs;
}

namespace {

// Share of the last wave's slots that a grid of `blocks` (one per multiprocessor) fills.
double WaveEfficiency(int64_t blocks) {
  const int64_t sms = GetCurrentDeviceTraits().multiprocessors;
  const int64_t waves = (blocks + sms - 1) / sms;
  return static_cast<double>(blocks) / static_cast<double>(waves * sms);
}

constexpr TernaryTiledConfig kMma128x32{2, 2, 4, 2, 4};
constexpr TernaryTiledConfig kMma128x64{2, 2, 4, 4, 4};
constexpr TernaryTiledConfig kMma128x64Wide{4, 2, 2, 4, 4};
TernaryTiledConfig Wgmma(int warpgroups, int tokens) {
  TernaryTiledConfig c{4 * warpgroups, 1, 1, tokens / 8, 4};
  c.wgmma = true;
  return c;
}

}  // namespace

TernaryTiledConfig DefaultTernaryTiledConfig(const TernaryMatrixView& w, int64_t m, bool wgmma) {
  // bench/cuda/kernel_benchmark.cu --products on an H200 (docs/perf.md), 2B4T and 70B shapes
  // from 64 to 1,024 tokens: the mma.sync kernels are bound by the MMA rate, so which one wins is
  // mostly how evenly its grid fills the multiprocessors; the wgmma kernel (256 x 128) wins
  // from 512 tokens on long inputs when its grid fills the last wave.
  const bool long_k = w.k_tiles() >= 48;
  if (m < 128) return kMma128x32;
  if (wgmma && long_k && m >= 512 &&
      WaveEfficiency(((w.padded_rows + 255) / 256) * ((m + 127) / 128)) >= 0.9) {
    return Wgmma(4, 128);
  }
  if (m >= 512 || w.padded_rows >= 32768) return w.padded_rows <= 4096 ? kMma128x32 : kMma128x64;
  if (long_k && w.padded_rows > 4096 && w.padded_rows <= 8192) {
    return wgmma && m >= 256 && w.k_tiles() >= 128 ? Wgmma(4, 64) : kMma128x64Wide;
  }
  return kMma128x32;
}

absl::Status TernaryTiledMatmulWithConfig(const TernaryTiledConfig& config,
                                          const TernaryMatrixView& w, const Int8Activations& x,
                                          float* y, int32_t* acc, cudaStream_t stream,
                                          int8_t* wgmma_scratch) {
  if (absl::Status s = ValidateTernaryOperands(w, x); !s.ok()) return s;
  if ((y == nullptr) == (acc == nullptr)) {
    return absl::InvalidArgumentError("tiled ternary GEMM needs exactly one of the outputs");
  }
  if (x.rows == 0) return absl::OkStatus();
  const Entry* entry = nullptr;
  for (const Entry& e : Entries()) {
    if (e.config == config) entry = &e;
  }
  if (entry == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiled ternary GEMM configuration ", config.Name(), " is not compiled in"));
  }
  if (config.wgmma && !WgmmaAvailable()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tiled ternary GEMM configuration ", config.Name(), " needs a compute capability 9.0 GPU"));
  }
  if (config.wgmma && wgmma_scratch == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiled ternary GEMM configuration ", config.Name(), " needs its scratch"));
  }
  const int64_t token_blocks = (x.rows + config.block_tokens() - 1) / config.block_tokens();
  if (token_blocks >= (int64_t{1} << 31) || w.row_tiles() / (config.block_rows() / 16) >= 65535) {
    return absl::InvalidArgumentError(absl::StrCat("tiled ternary GEMM grid too large for [",
                                                   w.rows, ", ", w.cols, "] x ", x.rows));
  }
  TernaryProductArgs a = internal::MakeTernaryProductArgs(w, x, y, acc);
  if (config.wgmma) {
    BITSERVE_CUDA_RETURN_IF_ERROR(internal::PermuteActivationsForWgmma(
        x.values, x.stride, a.m, a.k_tiles, wgmma_scratch, stream));
    a.x = wgmma_scratch;
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(entry->launch(a, stream));
  return absl::OkStatus();
}

absl::Status TernaryTiledMatmul(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                                int32_t* acc, cudaStream_t stream, int8_t* wgmma_scratch) {
  return TernaryTiledMatmulWithConfig(
      DefaultTernaryTiledConfig(w, x.rows, wgmma_scratch != nullptr && WgmmaAvailable()), w, x, y,
      acc, stream, wgmma_scratch);
}

}  // namespace bitserve::cuda
