// The device side of expert parallelism (runtime/transport/expert_exchange.h; the engine's use:
// runtime/engine/cuda_expert_parallel.cu): the small kernels between the routing and grouped
// products of moe_routing.cuh / moe_ffn.cuh and the exchange's all-to-all.
//   sender:   (token, slot) pairs keyed by their expert's owner (MapExperts with a key table, then
//             GroupByExpert over the keys) -> GatherDispatchRows: each grouped pair's int8 input
//             row, its scale and its expert id, contiguous per destination rank;
//   owner:    the rows received -> LocalExpertRows (their sums for the ternary products and each
//             row's local expert index, refusing an expert this rank does not hold) -> the grouped
//             products -> ResultsInReceivedOrder (each row's output in the order received, f32 or
//             bf16 as the exchange moves results);
//   sender:   the results back -> Bf16ToFloat when they came as bf16 -> CombineExperts.
// Each is a copy or a cast: the EP block's integer parts and float results equal the one-GPU
// block's (MoeFeedForward) bit for bit when results travel as f32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitserve::cuda {

// out[i] = table[in[i]] for i < n (in: ids in [0, table_size); an id outside is written as 0).
absl::Status MapExperts(const int32_t* in, int64_t n, const int32_t* table, int table_size,
                        int32_t* out, cudaStream_t stream);

// For each grouped row r < rows: values[r] = x_values[source_rows[r]] (row_bytes int8 each, from
// rows of x_stride), scales[r] = x_scales[source_rows[r]], experts[r] = key_experts[keys[r]].
absl::Status GatherDispatchRows(const int8_t* x_values, int64_t x_stride, const float* x_scales,
                                const int32_t* source_rows, const int32_t* keys,
                                const int32_t* key_experts, int64_t rows, int64_t row_bytes,
                                int8_t* values, float* scales, int32_t* experts,
                                cudaStream_t stream);

// For each received row r < rows (row_bytes int8 values, a multiple of 4): sums[r] = the sum of its
// values; local[r] = local_index[experts[r]], the rank's index of the row's expert. A global id
// outside [0, num_experts) or one whose local_index is < 0 (not held here) writes local[r] = 0 and
// sets *bad to that id + 1 (the engine reads *bad after the step and fails it).
absl::Status LocalExpertRows(const int8_t* values, int64_t rows, int64_t row_bytes,
                             const int32_t* experts, const int32_t* local_index, int num_experts,
                             int32_t* sums, int32_t* local, int32_t* bad, cudaStream_t stream);

// out row r = y row grouped_rows[r] for r < rows (hidden floats each), as float32 (bf16 = false)
// or bf16 (round to nearest even).
absl::Status ResultsInReceivedOrder(const float* y, const int32_t* grouped_rows, int64_t rows,
                                    int64_t hidden, bool bf16, void* out, cudaStream_t stream);

// out[i] = the float of bf16 in[i], i < n.
absl::Status Bf16ToFloat(const uint16_t* in, int64_t n, float* out, cudaStream_t stream);

}  // namespace bitserve::cuda
