#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/ternary_gemv_kernels.cuh"
#include "kernels/cuda/ternary/ternary_grouped_gemv.cuh"
#include "kernels/cuda/ternary/ternary_tiled_internal.cuh"

namespace bitserve::cuda {
namespace {

using internal::ExpertGroupsArgs;
using internal::GemvDp4aKernel;
using internal::GemvMmaKernel;
using internal::TernaryProductArgs;

// Rows per item from which the default is the tiled kernel (DefaultGroupedTiledConfig). 16 once
// the 16-token blocks have passed their op tests on a GPU (docs/perf.md: 20-40% faster there).
constexpr int kGroupedTiledMinRows = 64;

using LaunchFn = cudaError_t (*)(const TernaryProductArgs&, const ExpertGroupsArgs&,
                                 int rows_per_item, int max_items, cudaStream_t);

// Grid: z = work items; a block past this run's items returns at once.
template <int kWarps, int kUnroll>
cudaError_t LaunchGroupedDp4a(const TernaryProductArgs& a, const ExpertGroupsArgs& g,
                              int rows_per_item, int max_items, cudaStream_t stream) {
  if (rows_per_item != 1) return cudaErrorInvalidValue;
  return LaunchDependent(GemvDp4aKernel<1, kWarps, kUnroll, true>, dim3(a.row_tiles, 1, max_items),
                         dim3(kWarps * 32), 0, stream, 1, a, g);
}

// Grid: x = token blocks of an item (a block past its item's rows returns at once).
template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
cudaError_t LaunchGroupedMma(const TernaryProductArgs& a, const ExpertGroupsArgs& g,
                             int rows_per_item, int max_items, cudaStream_t stream) {
  const dim3 grid((rows_per_item + 8 * kNT - 1) / (8 * kNT),
                  (a.row_tiles + kRT * kRW - 1) / (kRT * kRW), max_items);
  return LaunchDependent(GemvMmaKernel<kNT, kRT, kRW, kKS, kUnroll, true>, grid,
                         dim3(kRT * kKS * 32), 0, stream, 1, a, g);
}

struct Entry {
  TernaryGemvConfig config;
  LaunchFn launch;
};

template <int kWarps, int kUnroll>
Entry Dp4aEntry() {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kDp4a;
  c.tokens = 1;
  c.k_split = kWarps;
  c.unroll = kUnroll;
  return {c, &LaunchGroupedDp4a<kWarps, kUnroll>};
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
  return {c, &LaunchGroupedMma<kNT, kRT, kRW, kKS, kUnroll>};
}

// <n-tiles, warps along rows, row tiles per warp, split-K warps, unroll>. Row tiles per warp
// (kRW) share one activation load: an item's few rows make the activations, not the weights, most
// of a block's traffic (2 bytes per weight byte at 16 rows and kRW = 1).
const std::vector<Entry>& Entries() {
  static const std::vector<Entry>* entries = new std::vector<Entry>{
      Dp4aEntry<8, 2>(),         Dp4aEntry<4, 2>(),         Dp4aEntry<8, 4>(),
      Dp4aEntry<4, 4>(),         MmaEntry<1, 1, 1, 8, 2>(), MmaEntry<1, 1, 1, 4, 2>(),
      MmaEntry<1, 1, 2, 8, 2>(), MmaEntry<1, 1, 2, 4, 2>(), MmaEntry<1, 1, 4, 4, 1>(),
      MmaEntry<2, 1, 1, 8, 2>(), MmaEntry<2, 1, 1, 4, 2>(), MmaEntry<2, 1, 2, 8, 2>(),
      MmaEntry<2, 1, 2, 4, 2>(), MmaEntry<2, 1, 4, 8, 1>(), MmaEntry<2, 1, 4, 4, 1>(),
      MmaEntry<2, 2, 2, 4, 1>(), MmaEntry<4, 1, 2, 4, 1>(), MmaEntry<4, 1, 2, 8, 1>(),
      MmaEntry<4, 1, 4, 4, 1>(), MmaEntry<4, 2, 2, 4, 1>(), MmaEntry<1, 1, 2, 2, 2>(),
      MmaEntry<1, 2, 2, 2, 2>(), MmaEntry<1, 1, 4, 2, 2>(), MmaEntry<2, 2, 2, 2, 2>(),
      MmaEntry<2, 2, 4, 2, 1>(), MmaEntry<2, 4, 2, 2, 1>(), MmaEntry<2, 2, 4, 4, 1>(),
      MmaEntry<2, 4, 2, 4, 1>(), MmaEntry<4, 2, 2, 2, 1>(), MmaEntry<4, 4, 2, 4, 1>(),
  };
  return *entries;
}

}  // namespace

const std::vector<TernaryGemvConfig>& AllGroupedGemvConfigs() {
  static const std::vector<TernaryGemvConfig>* configs = [] {
    auto* v = new std::vector<TernaryGemvConfig>;
    for (const Entry& e : Entries()) v->push_back(e.config);
    return v;
  }();
  return *configs;
}

TernaryGemvConfig DefaultGroupedGemvConfig(const TernaryMatrixView& w, int rows_per_item) {
  // From `moe_layer_benchmark --sweep` on an H100 (docs/perf.md), the qwen3-30b-a3b and
  // qwen3-235b-a22b experts: long inputs are gate/up (16+ k-tiles), short ones down (6 .. 12
  // k-tiles, where 8 split-K warps would idle). Items of 16+ rows want four warps along the rows,
  // two row tiles each, sharing each activation load (2 split-K warps): 119 -> 57 us for the
  // 30B shape's gate/up at 256 tokens, 61 -> 41 us for its down.
  const bool long_k = w.k_tiles() >= 16;
  using C = TernaryGemvConfig;
  switch (rows_per_item) {
    case 1:
      return long_k ? C::Dp4a(1, 4, 4) : C::Dp4a(1, 4, 2);
    case 8:
      return long_k ? C::Mma(8, 1, 1, 4, 2) : C::Mma(8, 2, 2, 2, 2);
    default:
      return C::Mma(16, 4, 2, 2, 1);
  }
}

const std::vector<TernaryTiledConfig>& AllGroupedTiledConfigs() {
  return internal::GroupedTiledConfigs();
}

TernaryTiledConfig DefaultGroupedTiledConfig(const TernaryMatrixView& w, int rows_per_item) {
  // `moe_layer_benchmark --sweep` on an H100 (docs/perf.md), qwen3-30b-a3b and qwen3-235b-a22b
  // experts: an expert's rows are padded to whole token blocks, so small blocks win while the
  // experts get few rows (32-token blocks at ~64 rows an expert: the 235B down product 274 -> 243
  // us), and 64-token blocks (more tokens per unpacked weight tile) once they get hundreds, but
  // for short inputs (down, <= 8 k-tiles). 16-token blocks timed best at ~16 rows (the 235B down
  // product 152 -> 93 us against the GEMV items) but have not run their op tests on a GPU yet, so
  // the default takes the tiled kernel from kGroupedTiledMinRows only.
  constexpr TernaryTiledConfig k128x16{4, 1, 2, 2, 4}, k128x32{2, 2, 4, 2, 4},
      k128x64{2, 2, 4, 4, 4};
  if (rows_per_item <= 32) return k128x16;
  if (rows_per_item <= 128 || w.k_tiles() <= 8) return k128x32;
  return k128x64;
}

int GroupedRowsPerItem(double rows_per_expert) {
  // The sweep's crossovers: one-row dp4a items up to ~1.3 rows an expert (8-row items win at
  // 1.6), the tiled kernel from ~24 (at 32 it beat the best GEMV items by 17%, at 16 lost by 25%).
  if (rows_per_expert <= 1.3) return 1;
  if (rows_per_expert <= 12) return 8;
  if (rows_per_expert <= 24) return 16;
  if (rows_per_expert <= 96) return 64;
  if (rows_per_expert <= 192) return 128;
  return 256;
}

double ExpectedRowsPerExpert(int64_t grouped_rows, int num_experts) {
  if (grouped_rows <= 0 || num_experts <= 0) return 0.0;
  const double e = num_experts;
  const double touched = e * (1.0 - std::pow(1.0 - 1.0 / e, static_cast<double>(grouped_rows)));
  return static_cast<double>(grouped_rows) / std::max(touched, 1.0);
}

int MaxGroupedItems(int64_t grouped_rows, int num_experts, int rows_per_item) {
  // sum over experts of ceil(rows_e / T) < rows / T + (active experts), and never above rows.
  const int64_t bound = grouped_rows / rows_per_item + std::min<int64_t>(num_experts, grouped_rows);
  return static_cast<int>(std::min(bound, grouped_rows));
}

absl::Status GroupedTernaryGemv(const GroupedTernaryWeights& w, const Int8Activations& x,
                                const GroupedRows& groups, float* y, int32_t* acc,
                                cudaStream_t stream) {
  if (absl::Status s = ValidateTernaryOperands(w.first, x); !s.ok()) return s;
  if ((y == nullptr) == (acc == nullptr)) {
    return absl::InvalidArgumentError(
        "grouped product needs exactly one of the float/int32 outputs");
  }
  if (w.num_experts < 1 || w.expert_words < w.first.bytes() / 4 || w.expert_words % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("grouped product: ", w.num_experts, " experts of ", w.expert_words,
                     " words do not hold [", w.first.rows, ", ", w.first.cols, "] matrices"));
  }
  if (y != nullptr && w.scales == nullptr) {
    return absl::InvalidArgumentError("grouped product: float output needs the experts' scales");
  }
  const int t = groups.rows_per_item;
  if (t != 1 && t != 8 && t != 16 && t != 32 && t != 64 && t != 128 && t != 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("grouped product: ", t, " rows per item is not compiled in (1, 8 .. 256)"));
  }
  if (groups.max_items < 0 || groups.max_items > 65535 || groups.items == nullptr ||
      groups.num_items == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("grouped product: bad work list (", groups.max_items, " items)"));
  }
  if (groups.max_items == 0) return absl::OkStatus();
  TernaryProductArgs a = internal::MakeTernaryProductArgs(w.first, x, y, acc);
  ExpertGroupsArgs g;
  g.items = reinterpret_cast<const int4*>(groups.items);
  g.num_items = groups.num_items;
  g.expert_uint4s = w.expert_words / 4;
  g.scales = y != nullptr ? w.scales : nullptr;
  g.source_rows = groups.source_rows;
  if (groups.tiled != nullptr || (groups.config == nullptr && t >= kGroupedTiledMinRows)) {
    // The tiled mma.sync kernel from 64 rows per item: the 64-row GEMV items took 1.27 ms for
    // qwen3-30b-a3b's block at 1,024 tokens on an H100, 7.7x the dense product of the same active
    // parameters (docs/perf.md).
    const TernaryTiledConfig tiled =
        groups.tiled != nullptr ? *groups.tiled : DefaultGroupedTiledConfig(w.first, t);
    const std::vector<TernaryTiledConfig>& compiled = AllGroupedTiledConfigs();
    if (std::find(compiled.begin(), compiled.end(), tiled) == compiled.end() ||
        t % tiled.block_tokens() != 0) {
      return absl::InvalidArgumentError(absl::StrCat("grouped tiled configuration ", tiled.Name(),
                                                     " is not compiled in for ", t,
                                                     " rows per item"));
    }
    BITSERVE_CUDA_RETURN_IF_ERROR(
        internal::LaunchGroupedTiled(tiled, a, g, t, groups.max_items, stream));
    return absl::OkStatus();
  }
  const TernaryGemvConfig config =
      groups.config != nullptr ? *groups.config : DefaultGroupedGemvConfig(w.first, t);
  const Entry* entry = nullptr;
  for (const Entry& e : Entries()) {
    if (e.config == config) entry = &e;
  }
  if (entry == nullptr || (config.kind == TernaryGemvConfig::Kind::kDp4a && t != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grouped configuration ", config.Name(), " is not compiled in for ", t, " rows per item"));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(entry->launch(a, g, t, groups.max_items, stream));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
