// Token sampling on the GPU: one row of logits per sequence in, one token (its logprob and, when
// asked, the top logprobs) out, so that only a few bytes per sequence leave the device.
//
// The semantics are runtime/sampling.h's, step for step (that file is the reference; kernels/ may
// not depend on runtime/, so the few pure functions it fixes — the splitmix64 uniform of (seed,
// draw index), the exp polynomial, the radix bucket of a float — are repeated in sampling.cu with
// the same operations):
//   1. penalties on a copy (repetition over prompt + output ids, then frequency and presence over
//      output ids), NaN as -inf;
//   2. temperature < 1e-5: argmax, the first index on ties;
//   3. / temperature; a non-finite maximum falls back to the argmax, as there;
//   4. top-k: the k largest, ties toward the lower id, in that order;
//   5. top-p over the survivors' mass; 6. min-p; 7. inverse CDF with the uniform of the draw.
// Survivors are visited in the reference's order: id order when nothing ranks them; the top-k
// order; for top-p alone, the ids above the boundary radix bucket in id order, then the boundary
// bucket's kept ids ranked. So a token differs from the CPU's only where the CPU's and the GPU's
// float64 sums (added in other orders) fall on two sides of the draw or of the top-p target: a
// relative distance of ~1e-15.
//
// Ranking (top-k, top-p) sorts the whole row (CUB radix sort of a 64-bit key: row slot, then the
// value's order bits inverted, stable so ties keep id order), up to kSortRowsPerPass rows at once.
// That is O(vocab) per ranked row; greedy rows and unranked sampling never sort. A call whose rows
// are all greedy without penalties splits each row over many blocks instead (batch 1 decode).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/common/pinned_buffer.cuh"

namespace bitserve::cuda {

inline constexpr int kMaxTopLogprobs = 20;

// One row's settings (runtime's SamplingParams, validated, plus the draw).
struct SamplingRow {
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 1;
  float min_p = 0;
  float repetition_penalty = 1;
  float presence_penalty = 0;
  float frequency_penalty = 0;
  int32_t top_logprobs = 0;  // [0, kMaxTopLogprobs]
  uint64_t seed = 0;
  int64_t draw_index = 0;
  // This row's entries in the penalty list: [penalty_begin, penalty_end).
  int32_t penalty_begin = 0, penalty_end = 0;
  int32_t sort_slot = -1;  // set by GpuSampler
  int32_t unused = 0;
};

// One distinct token id of a row's history: `repeat` = 1 if the repetition penalty applies to it
// (it occurs in the prompt or the output and the penalty is on), `count` = its occurrences in the
// output (frequency/presence apply when > 0 and either is on).
struct PenaltyEntry {
  int32_t id = 0;
  int32_t repeat = 0;
  int32_t count = 0;
};

class GpuSampler {
 public:
  static constexpr int kSortRowsPerPass = 64;

  // Up to max_rows rows of `vocab` logits per call.
  static absl::StatusOr<std::unique_ptr<GpuSampler>> Create(int64_t max_rows, int64_t vocab);

  // Enqueues sampling of rows [0, rows) of `logits` ([rows, vocab] float32, device) with
  // rows[r]'s settings, and the copy of the results to pinned host memory; call
  // cudaStreamSynchronize(stream) before reading token()/logprob()/top(). `penalties` holds the
  // entries that the rows' [penalty_begin, penalty_end) point into.
  absl::Status Sample(const float* logits, std::span<const SamplingRow> rows,
                      std::span<const PenaltyEntry> penalties, cudaStream_t stream);

  int32_t token(int64_t row) const { return tokens_host_[row]; }
  float logprob(int64_t row) const { return logprobs_host_[row]; }
  // The row's top logprobs: count() of them, most likely first.
  int top_count(int64_t row) const { return top_count_host_[row]; }
  int32_t top_token(int64_t row, int i) const { return top_ids_host_[row * kMaxTopLogprobs + i]; }
  float top_logprob(int64_t row, int i) const {
    return top_logprobs_host_[row * kMaxTopLogprobs + i];
  }

 private:
  GpuSampler() = default;

  int64_t max_rows_ = 0, vocab_ = 0;
  PinnedBuffer<SamplingRow> rows_host_;
  DeviceBuffer<SamplingRow> rows_;
  DeviceBuffer<PenaltyEntry> penalties_;  // grown when a step's penalty list is longer
  DeviceBuffer<float> work_;              // [kSortRowsPerPass, vocab]
  DeviceBuffer<double> row_state_;        // [max_rows, 2]: log_z, total mass
  DeviceBuffer<float> row_max_;           // [max_rows]
  DeviceBuffer<uint64_t> keys_in_, keys_out_;
  DeviceBuffer<int32_t> ids_in_, ids_out_;
  DeviceBuffer<uint8_t> sort_temp_;
  DeviceBuffer<int32_t> tokens_, top_ids_, top_count_;
  DeviceBuffer<float> logprobs_, top_logprobs_;
  PinnedBuffer<int32_t> tokens_host_, top_ids_host_, top_count_host_;
  PinnedBuffer<float> logprobs_host_, top_logprobs_host_;
  // Partial results of the split greedy path: [max_rows][splits].
  DeviceBuffer<float> greedy_v_;
  DeviceBuffer<int32_t> greedy_i_;
  DeviceBuffer<double> greedy_sum_;
};

}  // namespace bitserve::cuda
