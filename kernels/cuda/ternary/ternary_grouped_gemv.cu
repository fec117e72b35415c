#include <algorithm>

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

// Grid: z = work items; a block past this run's items returns at once.
template <int kWarps, int kUnroll>
cudaError_t LaunchGroupedDp4a(const TernaryProductArgs& a, const ExpertGroupsArgs& g, int max_items,
                              cudaStream_t stream) {
  return LaunchDependent(GemvDp4aKernel<1, kWarps, kUnroll, true>, dim3(a.row_tiles, 1, max_items),
                         dim3(kWarps * 32), 0, stream, 1, a, g);
}

template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
cudaError_t LaunchGroupedMma(const TernaryProductArgs& a, const ExpertGroupsArgs& g, int max_items,
                             cudaStream_t stream) {
  const dim3 grid(1, (a.row_tiles + kRT * kRW - 1) / (kRT * kRW), max_items);
  return LaunchDependent(GemvMmaKernel<kNT, kRT, kRW, kKS, kUnroll, true>, grid,
                         dim3(kRT * kKS * 32), 0, stream, 1, a, g);
}

// Short inputs (the experts' down products: 768 .. 1,536 inputs = 6 .. 12 k-tiles) leave split-K
// warps idle at 8 per row tile, so they get 4. From 64 rows per item the tiled mma.sync kernel:
// the 64-row GEMV items took 1.27 ms for qwen3-30b-a3b's block at 1,024 tokens on an H100, 7.7x
// the dense product of the same active parameters (docs/perf.md).
cudaError_t Launch(int rows_per_item, bool long_k, const TernaryProductArgs& a,
                   const ExpertGroupsArgs& g, int max_items, cudaStream_t stream) {
  switch (rows_per_item) {
    case 1:
      return long_k ? LaunchGroupedDp4a<8, 2>(a, g, max_items, stream)
                    : LaunchGroupedDp4a<4, 2>(a, g, max_items, stream);
    case 8:
      return long_k ? LaunchGroupedMma<1, 1, 1, 8, 2>(a, g, max_items, stream)
                    : LaunchGroupedMma<1, 1, 1, 4, 2>(a, g, max_items, stream);
    case 16:
      return long_k ? LaunchGroupedMma<2, 1, 1, 8, 2>(a, g, max_items, stream)
                    : LaunchGroupedMma<2, 1, 1, 4, 2>(a, g, max_items, stream);
    case 32:
      return LaunchGroupedMma<4, 1, 2, 4, 1>(a, g, max_items, stream);
    case 64:
    case 128:
    case 256:
      return internal::LaunchGroupedTiled(a, g, rows_per_item, max_items, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

int GroupedRowsPerItem(double rows_per_expert) {
  if (rows_per_expert <= 1.5) return 1;
  if (rows_per_expert <= 12) return 8;
  if (rows_per_expert <= 24) return 16;
  if (rows_per_expert <= 48) return 32;
  if (rows_per_expert <= 96) return 64;
  if (rows_per_expert <= 192) return 128;
  return 256;
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
  BITSERVE_CUDA_RETURN_IF_ERROR(Launch(t, w.first.k_tiles() >= 16, a, g, groups.max_items, stream));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
