// Knobs of the paged attention kernels that the production call (PagedAttention) fixes, exposed
// for the op test (force the split-KV reduction on short contexts) and the benchmark (compare
// variants in one run). The engine calls PagedAttention.
#pragma once

#include "kernels/cuda/paged_attention.cuh"

namespace bitserve::cuda {

struct PagedAttentionOptions {
  // Decode split-KV: 0 = choose from the batch bounds and the SM count; n > 0 = at most n splits
  // per (entry, KV head) (still limited by the workspace and by kPagedAttentionMinSplitKeys).
  int decode_splits = 0;
  // Prefill on tensor cores: q and the softmax weights p enter the bf16 MMAs as hi + lo bf16 pairs
  // (two MMAs each, ~16 mantissa bits, errors ~1e-6 relative); false = one bf16 MMA each (q and p
  // rounded to bf16: ~2e-3 relative error), for timing the difference. bf16 caches only: int8 and
  // int4 caches always take the hi + lo path.
  bool prefill_split_bf16 = true;
};

// Decode splits are at least this many keys long (a shorter split costs more in its fixed part
// than it gains in parallelism).
inline constexpr int kPagedAttentionMinSplitKeys = 128;

absl::Status PagedAttentionWithOptions(const float* q, const AttentionBatch& batch,
                                       const PagedKvLayer& cache, int num_heads, float scale,
                                       float* out, void* workspace, size_t workspace_bytes,
                                       const PagedAttentionOptions& options, cudaStream_t stream);

}  // namespace bitserve::cuda
