// Knobs of the paged attention kernels that the production call (PagedAttention) fixes, exposed
// for the op test (force the split-KV reduction on short contexts) and the benchmark (compare
// variants in one run). The engine calls PagedAttention.
#pragma once

#include "kernels/cuda/attention/paged_attention.cuh"

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
  // Decode over int8 / int4 caches with head_dim 64 or 128 on tensor cores
  // (paged_attention_decode_mma.cu); false = the CUDA-core kernel every other shape takes, for
  // comparing the two.
  bool decode_tensor_cores = true;
  // bf16 caches on the same tensor-core kernel (q and p as hi + lo bf16 against the stored keys
  // and values), for large batches of short contexts where the CUDA-core kernel is issue-bound at
  // a third of the bandwidth (docs/perf.md, llama-70b at batch 256). Off by default until its op
  // tests and the bf16 decode benchmark have run on a GPU (written 2026-12-08, no device lent).
  bool decode_tensor_cores_bf16 = false;
  // The tensor-core kernel's register bound (up to 8 heads per KV head): 2 resident blocks per SM
  // (no spills), or 3 (<= 168 registers, a few spilled), for comparing the two. Measured on an H100
  // (docs/perf.md): 3 is 5-25% slower at 32K-128K, so 2 it is.
  int decode_mma_blocks_per_sm = 2;
};

// Decode splits are at least this many keys long (the split length is a multiple of 32 anyway).
// Was 128: at batch 1 and short contexts that left most SMs idle while each block walked its
// keys in several dependent rounds of loads (llama-70b, 8 KV heads, ~530 of a 1,024-position
// bucket: 5 active splits x 8 heads = 40 blocks, 15 us per layer on an H200; docs/perf.md).
// With more work the split count is set by waves of resident blocks, not by this bound.
inline constexpr int kPagedAttentionMinSplitKeys = 32;

absl::Status PagedAttentionWithOptions(const float* q, const AttentionBatch& batch,
                                       const PagedKvLayer& cache, int num_heads, float scale,
                                       float* out, void* workspace, size_t workspace_bytes,
                                       const PagedAttentionOptions& options, cudaStream_t stream);

}  // namespace bitserve::cuda
