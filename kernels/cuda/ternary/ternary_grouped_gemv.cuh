// Grouped ternary products for mixture-of-experts layers: the rows of a batch, grouped by expert
// (rows [begin_e, end_e) go through expert e's matrix), multiplied in ONE launch over every
// active expert. The work list (items: an expert and up to `rows_per_item` of its rows) is built
// on the device by the routing kernels (kernels/cuda/moe/moe_routing.cuh), so the launch shape
// depends only on bounds and a captured CUDA graph replays it whatever the routing.
//
// Built from the product kernels: the GEMV kernels of ternary_gemv.cuh (dp4a for one row per item,
// int8 mma.m16n8k32 streaming for 8 .. 32), the tiled mma.sync kernel of ternary_tiled_gemm.cuh
// (128-row tiles of 32 or 64 tokens by default, 16 on request) from 64 rows per item. Results are
// those of the plain products on each expert's rows: the int32 sums exact, the float epilogue bit
// for bit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/ternary/int8_activations.h"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/ternary/ternary_tiled_gemm.cuh"

namespace bitserve::cuda {

// One work item of a grouped product (device memory, 16 bytes; read as an int4).
struct GroupedProductItem {
  int32_t expert = 0;
  int32_t row_begin = 0;  // first grouped row
  int32_t rows = 0;       // 1 .. rows_per_item
  int32_t unused = 0;
};

// The experts' matrices: one buffer, expert e's packed matrix at words + e * expert_words, all of
// the shape of `first`.
struct GroupedTernaryWeights {
  TernaryMatrixView first;
  int64_t expert_words = 0;  // 32-bit words per expert (a multiple of 4)
  int num_experts = 0;
  const TernaryOutputScale* scales = nullptr;  // device, per expert (the float output's epilogue)
};

// The work list of one run (device pointers) and the bounds the launch is sized by.
struct GroupedRows {
  const GroupedProductItem* items = nullptr;
  const int32_t* num_items = nullptr;  // device: items of this run
  int max_items = 0;                   // grid bound (host)
  int rows_per_item = 1;               // 1, 8, 16, 32, 64, 128 or 256 (GroupedRowsPerItem)
  // Activation row of each grouped row (the product gathers its inputs); null: grouped row r reads
  // activation row r.
  const int32_t* source_rows = nullptr;
  // The GEMV configuration (one of AllGroupedGemvConfigs, for benchmarks); null: the default,
  // DefaultGroupedGemvConfig up to 32 rows per item and the tiled kernel from 64.
  const TernaryGemvConfig* config = nullptr;
  // Instead, a tiled configuration (one of AllGroupedTiledConfigs, for benchmarks) whose token
  // blocks divide rows_per_item; null: the default (DefaultGroupedTiledConfig from 64 rows).
  const TernaryTiledConfig* tiled = nullptr;
};

// Rows per work item for a run whose active experts get about `rows_per_expert` rows each.
int GroupedRowsPerItem(double rows_per_expert);
// The rows an active expert gets on average when `grouped_rows` rows fall on `num_experts`
// experts uniformly at random: rows / E(1 - (1 - 1/E)^rows) (the experts a run touches, not all).
double ExpectedRowsPerExpert(int64_t grouped_rows, int num_experts);
// Bound on the items of `grouped_rows` rows over `num_experts` experts in runs of rows_per_item.
int MaxGroupedItems(int64_t grouped_rows, int num_experts, int rows_per_item);

// The GEMV configuration of a grouped run of `rows_per_item` (1 .. 32) over matrices like w.
TernaryGemvConfig DefaultGroupedGemvConfig(const TernaryMatrixView& w, int rows_per_item);
// The tiled configuration of a grouped run of `rows_per_item` (16 .. 256) over matrices like w
// (the default from 64 rows per item).
TernaryTiledConfig DefaultGroupedTiledConfig(const TernaryMatrixView& w, int rows_per_item);
// Every tiled configuration compiled for grouped products (128-row blocks of 16 .. 64 tokens).
const std::vector<TernaryTiledConfig>& AllGroupedTiledConfigs();
// Every GEMV configuration compiled for grouped products (a block of `tokens` rows; an item of
// more rows takes several blocks).
const std::vector<TernaryGemvConfig>& AllGroupedGemvConfigs();

// y [grouped rows, rows] float32 (with the expert's scale), or acc [.., rows] int32: exactly one
// non-null. x: the activations the grouped rows read (x.rows: how many there are).
absl::Status GroupedTernaryGemv(const GroupedTernaryWeights& w, const Int8Activations& x,
                                const GroupedRows& groups, float* y, int32_t* acc,
                                cudaStream_t stream);

}  // namespace bitserve::cuda
