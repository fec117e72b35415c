// Paged attention and WritePagedKv (kernels/cuda/attention/paged_attention.cuh) in the CUDA op test
// harness (op_test_harness.cuh), for each KV cache dtype (bf16, int8, int4;
// kernels/kv_cache_format.h).
//
// Random q, K/V history quantized by the CPU reference (kernels/cpu/kv_quant.h) straight into a
// cache whose unused rows and blocks hold NaN (bf16 NaN, or NaN fp16 params for int8/int4: a
// kernel reading past a sequence fails), the chunk's own K/V written by WritePagedKv and checked
// bit for bit against QuantizeKvRow (data bytes and fp16 params; rounding ties included: bf16
// ties, and int8/int4 rows built so that the scale is a power of two and some values lie exactly
// half-way between two steps), shuffled non-contiguous block tables, outputs poisoned. Reference:
// cpu::AttentionCausal over the same dequantized K/V (DequantizeKvRow) in contiguous float rows;
// a few key channels are 8x larger (the outliers real models have). The quantized types are held
// to the bf16 tolerance: the kernels dequantize to exactly the reference's values (prefill keeps
// the integers exact in bf16 and applies scale and zero around the MMAs).
// Tolerance: relative L2 error of the whole output <= 3e-4 and of each (token, head) row <= 1e-3.
// Measured on an H100 (2026-11-24, bf16 cache): decode (fp32 CUDA cores) ~4e-7 at short contexts,
// 2e-5 at 32K; prefill (tensor cores, q and p as hi + lo bf16, ~2^-17 relative) ~4e-6 short, 9e-5
// for a chunk after 32K keys: at long contexts the output is an average of many values (|o| ~
// 1/sqrt(keys)), so the same absolute error is a larger relative one, for the CPU's float sums
// too. The plain-bf16 prefill variant (q and p rounded to bf16) measured 2.6e-3 and gets 1e-2 /
// 5e-2. int8 / int4 caches (H100, 2026-11-23, bench/cuda/results/h100_kv_dtype_op_test.txt): at
// most 1.3e-5 (decode) and 3.6e-5 (prefill, the chunk after 32K keys, int4) for the whole output,
// 2.1e-4 for a row. The tensor-core decode kernel for int8 / int4 (H100, 2026-12-07,
// bench/cuda/results/h100_op_test_mma_decode.log): 1e-6 typical, at most 5.5e-5 for the whole
// output (int4, 64K context); the CUDA-core kernel stays tested on the same shapes (_cudacores),
// and the 3-blocks-per-SM register bound too (_mmablocks3). bf16 caches on the tensor-core decode
// kernel (opt-in, _bf16mma; q and p as hi + lo bf16 against the stored keys and values) are held
// to the same tolerance; written 2026-12-08, not yet run on a GPU. Each case prints its errors.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/cuda/attention/paged_attention_options.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/op_test_harness.cuh"
#include "kernels/kv_cache_format.h"

namespace bitserve::cuda {
namespace {

struct AttnEntry {
  int start, tokens;  // positions already cached, tokens of this step
};

struct AttnCase {
  std::string label;
  int heads, kv_heads, head_dim, block_size;
  std::vector<AttnEntry> entries;
  int decode_splits = 0;      // PagedAttentionOptions::decode_splits (0: automatic)
  bool split_bf16 = true;     // PagedAttentionOptions::prefill_split_bf16
  bool graph_bounds = false;  // host bounds above the true counts, true counts on the device
  KvDtype dtype = KvDtype::kBf16;
  bool cuda_cores = false;  // PagedAttentionOptions::decode_tensor_cores = false
  int mma_blocks = 0;       // PagedAttentionOptions::decode_mma_blocks_per_sm (0: default)
  bool bf16_mma = false;    // PagedAttentionOptions::decode_tensor_cores_bf16

  std::string Name() const {
    std::string name = absl::StrCat(label, "_", KvDtypeName(dtype), "_h", heads, "_kv", kv_heads,
                                    "_d", head_dim, "_bs", block_size);
    if (decode_splits > 0) absl::StrAppend(&name, "_splits", decode_splits);
    if (!split_bf16) absl::StrAppend(&name, "_plainbf16");
    if (graph_bounds) absl::StrAppend(&name, "_graphbounds");
    if (cuda_cores) absl::StrAppend(&name, "_cudacores");
    if (mma_blocks > 0) absl::StrAppend(&name, "_mmablocks", mma_blocks);
    if (bf16_mma) absl::StrAppend(&name, "_bf16mma");
    return name;
  }
};

std::vector<AttnCase> AllAttentionCases() {
  std::vector<AttnCase> c;
  const std::vector<AttnEntry> decode8 = {{0, 1},  {1, 1},    {15, 1},   {16, 1},
                                          {17, 1}, {1000, 1}, {4095, 1}, {5000, 1}};
  // Decode only: every head_dim and GQA ratio (1, 2, 3-in-4, 4, 5-in-8, 8, 16 = two slices).
  c.push_back({"decode", 20, 5, 128, 16, decode8});  // bitnet-2b4t
  c.push_back({"decode", 4, 2, 32, 16, decode8});    // tiny / test-gqa
  c.push_back({"decode", 3, 3, 32, 16, decode8});    // test-odd
  c.push_back({"decode", 4, 4, 64, 8, decode8});
  c.push_back({"decode", 16, 2, 96, 32, decode8});
  c.push_back({"decode", 64, 8, 128, 16, {{3000, 1}, {77, 1}}});  // 70B
  c.push_back({"decode", 12, 4, 64, 16, decode8});
  c.push_back({"decode", 10, 2, 128, 64, decode8});
  c.push_back({"decode", 32, 2, 64, 16, decode8});
  // The split-KV reduction forced on, and off.
  c.push_back({"decode", 20, 5, 128, 16, decode8, 1});
  c.push_back({"decode", 20, 5, 128, 16, decode8, 7});
  c.push_back({"decode", 4, 2, 32, 256, decode8, 3});
  // Long contexts.
  c.push_back({"decode_long", 20, 5, 128, 16, {{32767, 1}, {20001, 1}, {9, 1}}});
  c.push_back({"decode_long", 8, 1, 128, 16, {{32000, 1}}, 5});
  // bf16 decode on the tensor-core kernel (opt-in, decode_tensor_cores_bf16): GQA 4, 3 and 8,
  // 16 heads per KV head (all 16 MMA rows), two head slices, forced splits, a long context, the
  // 3-blocks bound, a mixed batch with graph-style bounds.
  for (AttnCase a : std::vector<AttnCase>{
           {"decode", 20, 5, 128, 16, decode8},
           {"decode", 6, 2, 64, 16, decode8},
           {"decode", 12, 4, 64, 16, decode8},
           {"decode", 32, 4, 128, 16, {{511, 1}, {130, 1}, {2, 1}}},  // qwen3-30b-a3b
           {"decode", 32, 2, 128, 16, decode8},
           {"decode", 64, 4, 128, 16, {{3000, 1}, {77, 1}, {0, 1}}},  // qwen3-235b-a22b
           {"decode", 64, 2, 64, 16, {{3000, 1}, {77, 1}}},
           {"decode", 20, 5, 128, 16, decode8, 7},
           {"decode_long", 20, 5, 128, 16, {{32767, 1}, {9, 1}}},
           {"mixed", 20, 5, 128, 16, {{100, 1}, {0, 33}, {2047, 1}}, 0, true, true}}) {
    a.bf16_mma = true;
    c.push_back(a);
  }
  AttnCase bounded{"decode", 20, 5, 128, 16, decode8};
  bounded.bf16_mma = true;
  bounded.mma_blocks = 3;
  c.push_back(bounded);
  // Prefill only: from position 0, chunks that start mid-block, two-token chunks, several entries.
  c.push_back({"prefill", 20, 5, 128, 16, {{0, 100}}});
  c.push_back({"prefill", 20, 5, 128, 16, {{37, 200}, {0, 2}, {5, 64}}});
  c.push_back({"prefill", 4, 2, 32, 16, {{0, 300}, {300, 77}}});
  c.push_back({"prefill", 3, 3, 32, 8, {{13, 129}}});
  c.push_back({"prefill", 4, 4, 64, 64, {{100, 65}, {0, 63}}});
  c.push_back({"prefill", 16, 2, 96, 16, {{21, 90}}});
  c.push_back({"prefill", 64, 8, 128, 16, {{40, 33}}});
  c.push_back({"prefill", 10, 2, 128, 256, {{250, 40}, {1, 3}}});
  c.push_back({"prefill", 20, 5, 128, 16, {{0, 1024}}});
  c.push_back({"prefill", 20, 5, 128, 16, {{37, 200}, {0, 2}}, 0, false});
  c.push_back({"prefill_long", 4, 1, 128, 16, {{32001, 64}}});
  // Mixed: decode entries first, then chunks (one starting mid-block); graph-style bounds.
  const std::vector<AttnEntry> mixed = {{100, 1}, {2047, 1}, {0, 1}, {517, 96}, {0, 33}, {64, 2}};
  c.push_back({"mixed", 20, 5, 128, 16, mixed});
  c.push_back({"mixed", 4, 2, 32, 16, mixed});
  c.push_back({"mixed", 16, 2, 64, 32, mixed, 4});
  c.push_back({"mixed", 20, 5, 128, 16, mixed, 0, true, true});
  c.push_back({"mixed", 3, 3, 32, 8, mixed, 0, true, true});
  // int8 and int4: every head_dim, GQA ratios, split-KV forced and automatic, long contexts,
  // prefill chunks (mid-block starts, several entries, after a long history), mixed batches with
  // graph-style bounds.
  for (KvDtype dtype : {KvDtype::kInt8, KvDtype::kInt4}) {
    const auto add = [&](AttnCase a) {
      a.dtype = dtype;
      c.push_back(a);
    };
    add({"decode", 20, 5, 128, 16, decode8});
    add({"decode", 4, 2, 32, 16, decode8});
    add({"decode", 3, 3, 32, 16, decode8});
    add({"decode", 4, 4, 64, 8, decode8});
    add({"decode", 16, 2, 96, 32, decode8});
    add({"decode", 64, 8, 128, 16, {{3000, 1}, {77, 1}}});
    add({"decode", 6, 2, 64, 16, decode8});  // shakespeare-dense
    add({"decode", 20, 5, 128, 16, decode8, 1});
    add({"decode", 20, 5, 128, 16, decode8, 7});
    // More than 8 heads per KV head: all 16 MMA rows of the tensor-core kernel, and two slices.
    add({"decode", 32, 2, 128, 16, decode8});
    add({"decode", 32, 2, 64, 16, decode8});
    add({"decode", 64, 2, 128, 16, {{3000, 1}, {77, 1}}});
    add({"decode_long", 20, 5, 128, 16, {{32767, 1}, {20001, 1}, {9, 1}}});
    add({"decode_long", 64, 8, 128, 16, {{65535, 1}, {40000, 1}}});
    // The CUDA-core kernel on the shapes the tensor-core kernel takes by default.
    for (AttnCase a : std::vector<AttnCase>{{"decode", 20, 5, 128, 16, decode8},
                                            {"decode", 6, 2, 64, 16, decode8},
                                            {"decode_long", 20, 5, 128, 16, {{32767, 1}, {9, 1}}},
                                            {"mixed", 20, 5, 128, 16, mixed, 0, true, true}}) {
      a.cuda_cores = true;
      add(a);
      a.cuda_cores = false;  // and the tensor-core kernel bounded for 3 blocks per SM
      a.mma_blocks = 3;
      add(a);
    }
    add({"prefill", 20, 5, 128, 16, {{0, 100}}});
    add({"prefill", 20, 5, 128, 16, {{37, 200}, {0, 2}, {5, 64}}});
    add({"prefill", 4, 2, 32, 16, {{0, 300}, {300, 77}}});
    add({"prefill", 3, 3, 32, 8, {{13, 129}}});
    add({"prefill", 4, 4, 64, 64, {{100, 65}, {0, 63}}});
    add({"prefill", 16, 2, 96, 16, {{21, 90}}});
    add({"prefill", 64, 8, 128, 16, {{40, 33}}});
    add({"prefill", 6, 2, 64, 16, {{0, 256}}});
    add({"prefill_long", 4, 1, 128, 16, {{32001, 64}}});
    add({"mixed", 20, 5, 128, 16, mixed});
    add({"mixed", 16, 2, 64, 32, mixed, 4});
    add({"mixed", 20, 5, 128, 16, mixed, 0, true, true});
    add({"mixed", 3, 3, 32, 8, mixed, 0, true, true});
  }
  return c;
}

// One token's keys or values of every KV head ([kv_heads][head_dim] floats, as the projections give
// them): normal values with the outlier channels, and, for a third of the rows, rounding ties of
// the dtype: bf16 values plus half an ulp (~1/8 of the elements); for int8 a row whose max |x| is
// 127 * 2^e (so the fp16 scale is exactly 2^e) with half of the elements at (k + 1/2) 2^e; for
// int4 a row from zero z to z + 15 * 2^e (exact fp16 zero and scale) with half of the elements at
// z + (k + 1/2) 2^e.
std::vector<float> RandomKvRow(KvDtype dtype, int kv_heads, int head_dim, bool keys, Rng& rng) {
  std::vector<float> x(static_cast<size_t>(kv_heads) * head_dim);
  const bool ties = rng.Bits() % 3 == 0;
  for (int h = 0; h < kv_heads; ++h) {
    float* xh = x.data() + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < head_dim; ++i) xh[i] = rng.Normal(keys && i % 17 == 3 ? 8.0f : 1.0f);
    if (!ties) continue;
    const float step = std::ldexp(1.0f, static_cast<int>(rng.Bits() % 5) - 5);
    if (dtype == KvDtype::kBf16) {
      for (int i = 0; i < head_dim; ++i) {
        if ((rng.Bits() & 7) != 0) continue;
        uint32_t u;
        std::memcpy(&u, &xh[i], 4);
        u = (u & 0xffff0000u) | 0x8000u;
        std::memcpy(&xh[i], &u, 4);
      }
    } else if (dtype == KvDtype::kInt8) {
      for (int i = 0; i < head_dim; ++i) {
        const int k = static_cast<int>(rng.Bits() % 253) - 126;  // -126 .. 126
        xh[i] = (rng.Bits() & 1) ? (k + 0.5f) * step : std::clamp(xh[i], -100 * step, 100 * step);
      }
      xh[rng.Bits() % head_dim] = (rng.Bits() & 1 ? 127.0f : -127.0f) * step;
    } else {
      const float zero = std::ldexp(std::round(rng.Normal(4.0f) * 16.0f), -4);  // exact in fp16
      for (int i = 0; i < head_dim; ++i) {
        const int k = static_cast<int>(rng.Bits() % 15);  // 0 .. 14
        xh[i] = (rng.Bits() & 1) ? zero + (k + 0.5f) * step
                                 : zero + std::clamp(xh[i] + 7.5f, 0.0f, 15.0f) * step;
      }
      xh[0] = zero;
      xh[head_dim - 1] = zero + 15 * step;
    }
  }
  return x;
}

void RunPagedAttentionCase(const AttnCase& c, Rng& rng) {
  const int E = static_cast<int>(c.entries.size());
  const int hd = c.head_dim, kvh = c.kv_heads, H = c.heads, bs = c.block_size;
  const int64_t row_width = static_cast<int64_t>(kvh) * hd;
  std::vector<int32_t> token_begin(E + 1, 0), start(E);
  int max_context = 0, max_blocks = 0, total_blocks = 0;
  for (int e = 0; e < E; ++e) {
    token_begin[e + 1] = token_begin[e] + c.entries[e].tokens;
    start[e] = c.entries[e].start;
    const int context = c.entries[e].start + c.entries[e].tokens;
    max_context = std::max(max_context, context);
    max_blocks = std::max(max_blocks, (context + bs - 1) / bs);
    total_blocks += (context + bs - 1) / bs;
  }
  const int T = token_begin[E];
  // Graph-style bounds: grids sized for more than there is; arrays past the true counts garbage.
  const int E_bound = c.graph_bounds ? E + 2 : E, T_bound = c.graph_bounds ? T + 5 : T;
  const int max_blocks_per_seq = max_blocks + 1;
  const int num_blocks = total_blocks + 3;

  // Shuffled block ids: each sequence's blocks are scattered over the pool.
  std::vector<int32_t> pool(num_blocks);
  for (int i = 0; i < num_blocks; ++i) pool[i] = i;
  std::shuffle(pool.begin(), pool.end(), rng.engine);
  std::vector<int32_t> tables(static_cast<size_t>(E_bound) * max_blocks_per_seq, 0x7f7f7f7f);
  int next = 0;
  for (int e = 0; e < E; ++e) {
    const int blocks = (start[e] + c.entries[e].tokens + bs - 1) / bs;
    for (int b = 0; b < blocks; ++b) tables[e * max_blocks_per_seq + b] = pool[next++];
  }
  std::vector<int32_t> token_entry(T_bound, 0x7f7f7f7f), tb_dev(E_bound + 1, 0x7f7f7f7f),
      start_dev(E_bound, 0x7f7f7f7f);
  for (int e = 0; e < E; ++e) {
    for (int t = token_begin[e]; t < token_begin[e + 1]; ++t) token_entry[t] = e;
    start_dev[e] = start[e];
  }
  for (int e = 0; e <= E; ++e) tb_dev[e] = token_begin[e];

  // Cache: NaN everywhere (bf16 NaN data; NaN fp16 params for int8/int4), a random history
  // quantized by the CPU reference; float copies of what it stands for, for the reference.
  const KvDtype dtype = c.dtype;
  const int64_t head_bytes = KvHeadBytes(dtype, hd), row_bytes = kvh * head_bytes;
  const int64_t row_params = static_cast<int64_t>(kvh) * KvParamHalves(dtype);
  const int64_t cache_rows = static_cast<int64_t>(num_blocks) * bs;
  std::vector<uint8_t> k_cache(cache_rows * row_bytes, 0xff), v_cache(cache_rows * row_bytes, 0xff);
  std::vector<uint16_t> k_params(std::max<int64_t>(cache_rows * row_params, 1), 0xffff);
  std::vector<uint16_t> v_params = k_params;
  std::vector<std::vector<float>> k_full(E), v_full(E);
  auto cache_row = [&](int e, int p) {
    return static_cast<int64_t>(tables[e * max_blocks_per_seq + p / bs]) * bs + p % bs;
  };
  // Quantizes one row into (data, params) at cache row r and its dequantized floats into `full`.
  auto store = [&](const std::vector<float>& x, int64_t r, std::vector<uint8_t>& data,
                   std::vector<uint16_t>& params, float* full) {
    cpu::QuantizeKvRow(dtype, x.data(), kvh, hd, data.data() + r * row_bytes,
                       params.data() + r * row_params);
    cpu::DequantizeKvRow(dtype, data.data() + r * row_bytes, params.data() + r * row_params, kvh,
                         hd, full);
  };
  for (int e = 0; e < E; ++e) {
    const int context = start[e] + c.entries[e].tokens;
    k_full[e].resize(context * row_width);
    v_full[e].resize(context * row_width);
    for (int p = 0; p < start[e]; ++p) {
      store(RandomKvRow(dtype, kvh, hd, true, rng), cache_row(e, p), k_cache, k_params,
            k_full[e].data() + p * row_width);
      store(RandomKvRow(dtype, kvh, hd, false, rng), cache_row(e, p), v_cache, v_params,
            v_full[e].data() + p * row_width);
    }
  }
  // New K/V of the step (float, as the projections give them) and the cache expected after.
  std::vector<float> k_new(T_bound * row_width, 0.0f), v_new(T_bound * row_width, 0.0f);
  std::vector<uint8_t> k_expect = k_cache, v_expect = v_cache;
  std::vector<uint16_t> kp_expect = k_params, vp_expect = v_params;
  for (int e = 0; e < E; ++e) {
    for (int t = token_begin[e]; t < token_begin[e + 1]; ++t) {
      const int p = start[e] + t - token_begin[e];
      const std::vector<float> kx = RandomKvRow(dtype, kvh, hd, true, rng);
      const std::vector<float> vx = RandomKvRow(dtype, kvh, hd, false, rng);
      std::copy(kx.begin(), kx.end(), k_new.begin() + t * row_width);
      std::copy(vx.begin(), vx.end(), v_new.begin() + t * row_width);
      store(kx, cache_row(e, p), k_expect, kp_expect, k_full[e].data() + p * row_width);
      store(vx, cache_row(e, p), v_expect, vp_expect, v_full[e].data() + p * row_width);
    }
  }
  std::vector<float> q(static_cast<int64_t>(T_bound) * H * hd);
  for (float& x : q) x = rng.Normal(1.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  auto d_k = Alloc<uint8_t>(k_cache.size());
  auto d_v = Alloc<uint8_t>(v_cache.size());
  auto d_kp = Alloc<uint16_t>(k_params.size());
  auto d_vp = Alloc<uint16_t>(v_params.size());
  auto d_knew = Alloc<float>(k_new.size());
  auto d_vnew = Alloc<float>(v_new.size());
  auto d_q = Alloc<float>(q.size());
  auto d_out = Alloc<float>(q.size());
  auto d_tables = Alloc<int32_t>(tables.size());
  auto d_token_entry = Alloc<int32_t>(token_entry.size());
  auto d_token_begin = Alloc<int32_t>(tb_dev.size());
  auto d_start = Alloc<int32_t>(start_dev.size());
  auto d_counts = Alloc<int32_t>(2);
  const int32_t counts[2] = {E, T};
  ASSERT_OK(d_k.CopyFromHost(k_cache.data(), k_cache.size()));
  ASSERT_OK(d_v.CopyFromHost(v_cache.data(), v_cache.size()));
  ASSERT_OK(d_kp.CopyFromHost(k_params.data(), k_params.size()));
  ASSERT_OK(d_vp.CopyFromHost(v_params.data(), v_params.size()));
  ASSERT_OK(d_knew.CopyFromHost(k_new.data(), k_new.size()));
  ASSERT_OK(d_vnew.CopyFromHost(v_new.data(), v_new.size()));
  ASSERT_OK(d_q.CopyFromHost(q.data(), q.size()));
  ASSERT_OK(d_out.FillBytes(kPoisonFloat));
  ASSERT_OK(d_tables.CopyFromHost(tables.data(), tables.size()));
  ASSERT_OK(d_token_entry.CopyFromHost(token_entry.data(), token_entry.size()));
  ASSERT_OK(d_token_begin.CopyFromHost(tb_dev.data(), tb_dev.size()));
  ASSERT_OK(d_start.CopyFromHost(start_dev.data(), start_dev.size()));
  ASSERT_OK(d_counts.CopyFromHost(counts, 2));

  AttentionBatch batch;
  batch.num_entries = E_bound;
  batch.num_tokens = T_bound;
  batch.token_begin = d_token_begin.get();
  batch.start_position = d_start.get();
  batch.token_entry = d_token_entry.get();
  batch.block_tables = d_tables.get();
  batch.max_blocks_per_seq = max_blocks_per_seq;
  batch.max_context = c.graph_bounds ? max_context + 100 : max_context;
  if (c.graph_bounds) {
    batch.device_num_entries = d_counts.get();
    batch.device_num_tokens = d_counts.get() + 1;
  }
  PagedKvLayer cache{d_k.get(), d_v.get(), num_blocks, bs, kvh, hd, dtype};
  if (dtype != KvDtype::kBf16) {
    cache.k_params = d_kp.get();
    cache.v_params = d_vp.get();
  }
  const size_t ws_bytes = PagedAttentionWorkspaceBytes(T_bound, H, hd, batch.max_context);
  auto d_ws = Alloc<float>(static_cast<int64_t>(ws_bytes / sizeof(float)));
  PagedAttentionOptions options;
  options.decode_splits = c.decode_splits;
  options.decode_tensor_cores = !c.cuda_cores;
  options.decode_tensor_cores_bf16 = c.bf16_mma;
  if (c.mma_blocks > 0) options.decode_mma_blocks_per_sm = c.mma_blocks;
  options.prefill_split_bf16 = c.split_bf16;

  ASSERT_OK(WritePagedKv(d_knew.get(), d_vnew.get(), batch, cache, nullptr));
  ASSERT_OK(PagedAttentionWithOptions(d_q.get(), batch, cache, H, scale, d_out.get(), d_ws.get(),
                                      ws_bytes, options, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // Every byte of the cache: the new rows equal the CPU quantizer's, nothing else changed.
  ExpectBitExact(Download(d_k), k_expect, row_bytes, "K cache after WritePagedKv");
  ExpectBitExact(Download(d_v), v_expect, row_bytes, "V cache after WritePagedKv");
  if (dtype != KvDtype::kBf16) {
    ExpectBitExact(Download(d_kp), kp_expect, row_params, "K params after WritePagedKv");
    ExpectBitExact(Download(d_vp), vp_expect, row_params, "V params after WritePagedKv");
  }
  const std::vector<float> out = Download(d_out);

  std::vector<float> ref(q.size(), 0.0f);
  cpu::AttentionShape shape{H, kvh, hd, scale};
  for (int e = 0; e < E; ++e) {
    const int64_t off = static_cast<int64_t>(token_begin[e]) * H * hd;
    cpu::AttentionCausal(q.data() + off, c.entries[e].tokens, start[e], k_full[e].data(),
                         v_full[e].data(), row_width, shape, ref.data() + off);
  }
  const double row_tol = c.split_bf16 ? 1e-3 : 5e-2, total_tol = c.split_bf16 ? 3e-4 : 1e-2;
  double num = 0, den = 0, worst_row = 0;
  int64_t nan = 0, bad_rows = 0;
  std::string first_bad;
  for (int64_t row = 0; row < static_cast<int64_t>(T) * H; ++row) {
    double rn = 0, rd = 0;
    for (int d = 0; d < hd; ++d) {
      const double g = out[row * hd + d], r = ref[row * hd + d];
      if (std::isnan(g)) ++nan;
      rn += (g - r) * (g - r);
      rd += r * r;
    }
    num += rn;
    den += rd;
    const double rel = std::sqrt(rn / std::max(rd, 1e-30));
    if (!(rel <= row_tol)) {
      if (bad_rows++ == 0) {
        first_bad = absl::StrCat("token ", row / H, " head ", row % H, " rel ", rel);
      }
    }
    if (!std::isnan(rel)) worst_row = std::max(worst_row, rel);
  }
  const double total = std::sqrt(num / std::max(den, 1e-30));
  std::cout << "[ attn     ] " << c.Name() << ": rel L2 " << total << ", worst row " << worst_row
            << std::endl;
  EXPECT_EQ(nan, 0) << "NaN (unwritten or poisoned) output elements";
  EXPECT_EQ(bad_rows, 0) << bad_rows << " rows over " << row_tol << "; first: " << first_bad;
  EXPECT_LE(total, total_tol);
  // Rows past the true token count (graph bounds) are never written.
  for (int64_t i = static_cast<int64_t>(T) * H * hd; i < static_cast<int64_t>(out.size()); ++i) {
    uint32_t u;
    std::memcpy(&u, &out[i], 4);
    ASSERT_EQ(u, 0xffffffffu) << "output element " << i << " past the true tokens was written";
  }
}

class PagedAttentionTest : public GpuOpTest<AttnCase> {};

TEST_P(PagedAttentionTest, MatchesCpuReference) {
  const AttnCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.Name()));
  RunPagedAttentionCase(c, rng);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(Attention, PagedAttentionTest, ::testing::ValuesIn(AllAttentionCases()),
                         [](const ::testing::TestParamInfo<AttnCase>& info) {
                           return absl::StrCat(info.param.Name(), "_", info.index);
                         });

TEST(PagedAttentionTest, RejectsUnsupportedShapes) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  AttentionBatch batch;
  PagedKvLayer cache;
  auto buffer = Alloc<__nv_bfloat16>(1024);
  cache = PagedKvLayer{buffer.get(), buffer.get(), 1, 16, 1, 48};
  EXPECT_EQ(PagedAttention(nullptr, batch, cache, 1, 1.0f, nullptr, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  cache.head_dim = 64;
  cache.block_size = 24;
  EXPECT_EQ(PagedAttention(nullptr, batch, cache, 1, 1.0f, nullptr, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  cache.block_size = 16;
  cache.num_kv_heads = 2;
  EXPECT_EQ(PagedAttention(nullptr, batch, cache, 3, 1.0f, nullptr, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // 3 query heads over 2 KV heads
  cache.num_kv_heads = 1;
  cache.head_dim = 64;
  cache.dtype = KvDtype::kInt8;  // without params planes
  EXPECT_EQ(PagedAttention(nullptr, batch, cache, 1, 1.0f, nullptr, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WritePagedKv(nullptr, nullptr, batch, cache, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  cache.dtype = KvDtype::kF32;  // the CPU reference's only
  EXPECT_EQ(PagedAttention(nullptr, batch, cache, 1, 1.0f, nullptr, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitserve::cuda
