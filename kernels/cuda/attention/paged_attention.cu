// Paged attention, host side: validation, the split-KV choice and the launches of the decode,
// combine and prefill kernels (paged_attention_internal.cuh lists the family's files; the cache
// layout and the batch description are drawn in paged_attention.cuh).
//
// Graph safety: grids are sized from the host bounds; every kernel reads the true entry / token
// counts from the device (device_num_* when given) and returns early past them.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/cuda/attention/paged_attention_internal.cuh"
#include "kernels/cuda/attention/paged_attention_options.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_info.cuh"

namespace bitserve::cuda {
namespace paged_attention {
namespace {

int MaxSplitsFor(int max_context) {
  return std::min(kMaxSplits,
                  (max_context + kPagedAttentionMinSplitKeys - 1) / kPagedAttentionMinSplitKeys);
}

}  // namespace

absl::Status ValidateCache(const AttentionBatch& batch, const PagedKvLayer& cache) {
  if (cache.k == nullptr || cache.v == nullptr) return absl::InvalidArgumentError("null KV cache");
  if (cache.dtype != KvDtype::kBf16 && cache.dtype != KvDtype::kInt8 &&
      cache.dtype != KvDtype::kInt4) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CUDA KV cache holds bf16, int8 or int4, not ", KvDtypeName(cache.dtype)));
  }
  if (cache.dtype != KvDtype::kBf16 && (cache.k_params == nullptr || cache.v_params == nullptr ||
                                        (reinterpret_cast<uintptr_t>(cache.k_params) & 3) != 0 ||
                                        (reinterpret_cast<uintptr_t>(cache.v_params) & 3) != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", KvDtypeName(cache.dtype), " KV cache needs 4-byte aligned k_params and v_params"));
  }
  if (cache.block_size < 1 || cache.block_size > 4096 ||
      (cache.block_size & (cache.block_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block_size must be a power of two, got ", cache.block_size));
  }
  if (cache.head_dim != 32 && cache.head_dim != 64 && cache.head_dim != 96 &&
      cache.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged attention supports head_dim 32, 64, 96, 128; got ", cache.head_dim));
  }
  if (cache.num_kv_heads < 1 || cache.num_blocks < 1) {
    return absl::InvalidArgumentError("KV cache without heads or blocks");
  }
  if (batch.num_entries < 0 || batch.num_tokens < 0 || batch.num_entries > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention batch bounds out of range: ", batch.num_entries, " entries, ",
                     batch.num_tokens, " tokens"));
  }
  if (batch.num_entries > 0 && (batch.token_begin == nullptr || batch.start_position == nullptr ||
                                batch.token_entry == nullptr || batch.block_tables == nullptr ||
                                batch.max_blocks_per_seq < 1 || batch.max_context < 1)) {
    return absl::InvalidArgumentError("attention batch arrays or bounds missing");
  }
  return absl::OkStatus();
}

}  // namespace paged_attention

using paged_attention::Aligned16;
using paged_attention::CombineArgs;
using paged_attention::DecodeArgs;
using paged_attention::DecodeMmaResidentBlocksPerSm;
using paged_attention::DecodeMmaSupports;
using paged_attention::DecodeResidentBlocksPerSm;
using paged_attention::kLog2e;
using paged_attention::kMaxSplitRecords;
using paged_attention::kPrefillRows;
using paged_attention::LaunchCombine;
using paged_attention::LaunchDecode;
using paged_attention::LaunchDecodeMma;
using paged_attention::LaunchPrefill;
using paged_attention::Log2;
using paged_attention::MaxSplitsFor;
using paged_attention::PrefillArgs;
using paged_attention::ValidateCache;

size_t PagedAttentionWorkspaceBytes(int max_tokens, int num_heads, int head_dim, int max_context) {
  const int splits = MaxSplitsFor(max_context);
  if (splits <= 1 || max_tokens <= 0 || num_heads <= 0 || head_dim <= 0) return 0;
  const int64_t records =
      std::min<int64_t>(kMaxSplitRecords, static_cast<int64_t>(max_tokens) * splits);
  return static_cast<size_t>(records) * num_heads * (head_dim + 2) * sizeof(float);
}

absl::Status PagedAttention(const float* q, const AttentionBatch& batch, const PagedKvLayer& cache,
                            int num_heads, float scale, float* out, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream) {
  return PagedAttentionWithOptions(q, batch, cache, num_heads, scale, out, workspace,
                                   workspace_bytes, PagedAttentionOptions{}, stream);
}

absl::Status PagedAttentionWithOptions(const float* q, const AttentionBatch& batch,
                                       const PagedKvLayer& cache, int num_heads, float scale,
                                       float* out, void* workspace, size_t workspace_bytes,
                                       const PagedAttentionOptions& options, cudaStream_t stream) {
  RETURN_IF_ERROR(ValidateCache(batch, cache));
  if (num_heads < 1 || num_heads % cache.num_kv_heads != 0 ||
      num_heads / cache.num_kv_heads > kPrefillRows) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads ", num_heads, " must be a multiple of num_kv_heads ",
                     cache.num_kv_heads, " with at most ", kPrefillRows, " per KV head"));
  }
  if (batch.num_tokens == 0 || batch.num_entries == 0) return absl::OkStatus();
  if (q == nullptr || out == nullptr || !Aligned16(q) || !Aligned16(out) || !Aligned16(cache.k) ||
      !Aligned16(cache.v)) {
    return absl::InvalidArgumentError(
        "PagedAttention needs non-null 16-byte aligned q, out, cache");
  }
  const int head_dim = cache.head_dim;
  const int group = num_heads / cache.num_kv_heads;
  const int log2_block_size = Log2(cache.block_size);
  const int entries = batch.num_entries;

  // Decode: one block per (split, KV head x head slice, entry). The tensor-core kernel takes up
  // to 16 heads of a group per block (its MMA rows), the CUDA-core kernel 1, 2, 4 or 8.
  const bool mma = options.decode_tensor_cores && DecodeMmaSupports(head_dim, cache.dtype) &&
                   (cache.dtype != KvDtype::kBf16 || options.decode_tensor_cores_bf16);
  const int mma_blocks = options.decode_mma_blocks_per_sm == 3 ? 3 : 2;
  const int group_per_block =
      mma ? std::min(group, 16) : (group >= 8 ? 8 : (group > 4 ? 8 : (group > 2 ? 4 : group)));
  const int subgroups = (group + group_per_block - 1) / group_per_block;
  const int kv_blocks = cache.num_kv_heads * subgroups;
  int splits = MaxSplitsFor(batch.max_context);
  if (options.decode_splits > 0) {
    splits = std::min(splits, options.decode_splits);
  } else {
    // Little work per SM slot (batch 1): one wave, the most splits whose blocks all fit at once,
    // so each block pays its start-up latency (q, block table, first loads) once and no partial
    // second wave idles SMs. Much work: ~2.7 waves of blocks of >= 2048 keys, which keeps every
    // slot busy and makes the last wave's tail small (measured on the H100: at batch 16 and 64,
    // 32K-128K, 7-13% faster than one wave; at batch 1, 32K-128K, 10-23% slower).
    const int64_t resident =
        static_cast<int64_t>(GetCurrentDeviceTraits().multiprocessors) *
        (mma ? DecodeMmaResidentBlocksPerSm(head_dim, group_per_block, mma_blocks, cache.dtype)
             : DecodeResidentBlocksPerSm(head_dim, group_per_block, cache.dtype));
    const int64_t per_split = static_cast<int64_t>(entries) * kv_blocks;
    const int64_t one_wave = std::max<int64_t>(1, resident / per_split);
    const int64_t many_waves =
        std::min<int64_t>((resident * 8 / 3 + per_split - 1) / per_split, batch.max_context / 2048);
    splits = static_cast<int>(std::min<int64_t>(splits, std::max(one_wave, many_waves)));
    // Between one and two waves, the second is partial: most SMs idle while it runs. Take one
    // full wave instead (ncu on the H100, int8 KV at batch 1 and 128K context: 64 splits of
    // blocks resident 2 per SM = 1.21 waves, 217 µs per layer against ~131 µs for bf16's one wave).
    const int64_t blocks = static_cast<int64_t>(splits) * per_split;
    if (blocks > resident && blocks < 2 * resident) {
      splits = static_cast<int>(std::max<int64_t>(1, resident / per_split));
    }
  }
  const int64_t record_bytes = static_cast<int64_t>(num_heads) * (head_dim + 2) * sizeof(float);
  splits = static_cast<int>(std::min<int64_t>(
      {splits, kMaxSplitRecords / entries,
       workspace == nullptr ? 1 : static_cast<int64_t>(workspace_bytes) / record_bytes / entries}));
  splits = std::max(splits, 1);
  int split_len = (batch.max_context + splits - 1) / splits;
  split_len = (split_len + 31) / 32 * 32;
  splits = (batch.max_context + split_len - 1) / split_len;

  DecodeArgs d;
  d.q = q;
  d.out = out;
  d.k = static_cast<const uint8_t*>(cache.k);
  d.v = static_cast<const uint8_t*>(cache.v);
  d.k_params = cache.k_params;
  d.v_params = cache.v_params;
  d.row_bytes = cache.num_kv_heads * KvHeadBytes(cache.dtype, head_dim);
  d.token_begin = batch.token_begin;
  d.start_position = batch.start_position;
  d.block_tables = batch.block_tables;
  d.max_blocks_per_seq = batch.max_blocks_per_seq;
  d.num_entries = entries;
  d.device_num_entries = batch.device_num_entries;
  d.num_heads = num_heads;
  d.num_kv_heads = cache.num_kv_heads;
  d.group = group;
  d.subgroups = subgroups;
  d.heads_per_block = group_per_block;
  d.log2_block_size = log2_block_size;
  d.scale_log2 = scale * kLog2e;
  d.num_splits = splits;
  d.split_len = split_len;
  // Partial outputs first, then (max, sum) pairs; both 16-byte aligned (head_dim % 16 == 0).
  d.partial_o = static_cast<float*>(workspace);
  d.partial_ml = splits > 1
                     ? d.partial_o + static_cast<int64_t>(entries) * num_heads * splits * head_dim
                     : nullptr;
  const dim3 decode_grid(splits, kv_blocks, entries);
  if (mma) {
    LaunchDecodeMma(head_dim, group_per_block, mma_blocks, cache.dtype, d, decode_grid, stream);
  } else {
    LaunchDecode(head_dim, group_per_block, cache.dtype, d, decode_grid, stream);
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (splits > 1) {
    CombineArgs c;
    c.partial_o = d.partial_o;
    c.partial_ml = d.partial_ml;
    c.out = out;
    c.token_begin = batch.token_begin;
    c.start_position = batch.start_position;
    c.num_entries = entries;
    c.device_num_entries = batch.device_num_entries;
    c.num_heads = num_heads;
    c.head_dim = head_dim;
    c.num_splits = splits;
    c.split_len = split_len;
    LaunchCombine(c, dim3(num_heads, entries), stream);
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }

  // Prefill: one block per (tile of 64 / group tokens of the flattened batch, KV head).
  if (batch.max_prefill_tokens == 0) return absl::OkStatus();
  PrefillArgs p;
  p.q = q;
  p.out = out;
  p.k = d.k;
  p.v = d.v;
  p.k_params = cache.k_params;
  p.v_params = cache.v_params;
  p.row_bytes = d.row_bytes;
  p.token_begin = batch.token_begin;
  p.start_position = batch.start_position;
  p.token_entry = batch.token_entry;
  p.block_tables = batch.block_tables;
  p.max_blocks_per_seq = batch.max_blocks_per_seq;
  p.num_tokens = batch.num_tokens;
  p.device_num_tokens = batch.device_num_tokens;
  p.num_heads = num_heads;
  p.num_kv_heads = cache.num_kv_heads;
  p.group = group;
  p.tokens_per_tile = kPrefillRows / group;
  p.log2_block_size = log2_block_size;
  p.scale_log2 = scale * kLog2e;
  const dim3 prefill_grid((batch.num_tokens + p.tokens_per_tile - 1) / p.tokens_per_tile,
                          cache.num_kv_heads);
  return LaunchPrefill(head_dim, options.prefill_split_bf16, cache.dtype, p, prefill_grid, stream);
}

}  // namespace bitserve::cuda
