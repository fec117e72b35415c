// Causal GQA attention over the paged KV cache, and the kernel that writes new keys and values
// into it. The reference is kernels/cpu/attention.h (AttentionCausal) on the same keys and values
// gathered into contiguous float rows.
//
// KV cache of one layer (DESIGN.md "KV cache"; the block tables belong to the scheduler), element
// formats as kernels/kv_cache_format.h defines them (the row of one token is the same there):
//
//   k, v:               [num_blocks][block_size][num_kv_heads][KvHeadBytes(dtype, head_dim)]
//   k_params, v_params: [num_blocks][block_size][num_kv_heads][KvParamHalves(dtype)]  fp16
//                       (int8: scale; int4: scale, zero; none for bf16)
//
// Position p of a sequence with block table T lives in block T[p / block_size], row
// p % block_size. dtype is kBf16, kInt8 or kInt4 (kF32 is the CPU reference's only).
//
// A batch is a list of entries (sequences); entry e brings tokens [token_begin[e],
// token_begin[e+1]) of the flattened batch at positions start_position[e], start_position[e] + 1,
// ... Token t attends to positions [0, its own position] of its sequence. Decode entries (one
// token each) come first in a step plan, so the engine may launch the decode path on
// [0, num_decode_entries) and the prefill path on the rest; both are correct for any entry.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/kv_cache_format.h"

namespace bitserve::cuda {

struct PagedKvLayer {
  void* k = nullptr;  // data planes, 16-byte aligned
  void* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  KvDtype dtype = KvDtype::kBf16;
  uint16_t* k_params = nullptr;  // int8 / int4 only, 4-byte aligned
  uint16_t* v_params = nullptr;
};

// Device bytes one position of one layer takes (keys and values, data and params).
inline int64_t PagedKvBytesPerPosition(KvDtype dtype, int num_kv_heads, int head_dim) {
  return int64_t{2} * num_kv_heads * (KvHeadBytes(dtype, head_dim) + 2 * KvParamHalves(dtype));
}

// Device arrays describing one batch, built by the engine once per step (before any layer) and
// shared by every layer. Host-side ints are upper bounds used to size grids, so that a CUDA graph
// captured for a bucket of batch sizes stays valid for smaller batches of the same bucket: kernels
// read the true sizes from the device arrays and return early past them.
struct AttentionBatch {
  int num_entries = 0;                      // entries in the device arrays (<= max_entries)
  int num_tokens = 0;                       // tokens in the batch (<= max_tokens)
  const int32_t* token_begin = nullptr;     // [num_entries + 1]
  const int32_t* start_position = nullptr;  // [num_entries]
  const int32_t* token_entry = nullptr;     // [num_tokens] entry of each token
  const int32_t* block_tables = nullptr;    // [num_entries][max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int max_context = 0;  // bound on start_position + tokens of any entry (grid sizing)
  // Device copies of num_entries / num_tokens for graph replays (may be null when the host ints
  // are exact).
  const int32_t* device_num_entries = nullptr;
  const int32_t* device_num_tokens = nullptr;
  // Bound on the tokens of entries with more than one token (prefill chunks); -1: num_tokens.
  // 0 (a decode-only step, e.g. a decode graph bucket) skips the prefill kernel's launch.
  int max_prefill_tokens = -1;
};

// Writes k, v ([num_tokens][num_kv_heads * head_dim] float32, RoPE already applied to k) into the
// cache in its dtype: bf16 rounded to nearest even, or int8 / int4 with their params, exactly the
// bytes of kernels/cpu/kv_quant.h's QuantizeKvRow.
absl::Status WritePagedKv(const float* k, const float* v, const AttentionBatch& batch,
                          const PagedKvLayer& cache, cudaStream_t stream);

// out[t][h * head_dim + d] = softmax_j(q[t,h] . k[j, h / (num_heads / num_kv_heads)] * scale) v[j]
// over j in [0, position(t)], fp32 accumulation over keys and values dequantized on the fly (the
// exact values kv_cache_format.h's dequantization gives). q and out: [num_tokens][num_heads *
// head_dim] float32. workspace: PagedAttentionWorkspaceBytes(...) bytes (split-KV partial results).
absl::Status PagedAttention(const float* q, const AttentionBatch& batch, const PagedKvLayer& cache,
                            int num_heads, float scale, float* out, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream);

size_t PagedAttentionWorkspaceBytes(int max_tokens, int num_heads, int head_dim, int max_context);

}  // namespace bitserve::cuda
