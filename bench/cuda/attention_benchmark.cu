// Paged attention (kernels/cuda/attention/paged_attention.cu) beside the machine's own ceilings, in
// one run.
//
// Decode: the bitnet-2b4t attention shape (20 query heads, 5 KV heads, head_dim 128, bf16 KV
// blocks of 16 tokens) at batch 1, 16, 64 and contexts 1K, 4K, 32K, 128K (and batch 64, 256 at
// 128 and 512: many short requests), the CUDA-core kernel (the default for bf16) beside the
// tensor-core one (PagedAttentionOptions::decode_tensor_cores_bf16): time per call and the KV bytes
// it must read (batch x context x 5 heads x 128 x 2 bytes x K and V) per second, against a
// device-to-device cudaMemcpy of 1 GiB (bytes read + written) and a streaming read kernel measured
// in the same run. Prefill: one chunk of 512 and 4096 tokens from position 0 (and 512 tokens after
// 32K cached ones) in TFLOP/s (4 x head_dim x heads x causal pairs), both MMA variants, beside
// cuBLAS bf16 GEMM 8192^3. Decode over int8 and int4 caches: the tensor-core kernel beside the
// CUDA-core one at batch 1, 16, 64 and contexts 4K, 32K, 128K, in bytes read (data and params).
//
// Method: random data (never zeros); block tables scatter each sequence over a shuffled pool;
// small cases rotate over copies of the KV data (>= 300 MB in all) so that the 50 MB L2 cannot
// hold them; each measurement is a CUDA graph of back-to-back calls, replayed after warm-up; the
// median replay over the calls in it is the time per call.
//
// Usage: attention_benchmark [--bf16-decode-only]   (only the ceilings and the bf16 decode table)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "bench/cuda/graph_timing.cuh"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/cuda/attention/paged_attention_options.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_buffer.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kHeads = 20, kKvHeads = 5, kHeadDim = 128, kBlockSize = 16;
constexpr int64_t kRowBytes = int64_t{kKvHeads} * kHeadDim * 2;  // one position of K (or V)
constexpr int64_t kRotationBytes = int64_t{300} << 20;
// About 2 ms of attention per graph replay, median of 9 replays.
constexpr GraphTiming kTiming{2000, 512, 9};

// One batch description on the device: entries with (start, tokens), block tables drawn from
// blocks [first_block, first_block + blocks) of the pool in shuffled order.
struct DeviceBatch {
  DeviceBuffer<int32_t> token_begin, start, token_entry, tables;
  AttentionBatch view;
};

absl::StatusOr<DeviceBatch> MakeBatch(const std::vector<std::pair<int, int>>& entries,
                                      int64_t first_block, std::mt19937_64& rng) {
  const int e_count = static_cast<int>(entries.size());
  std::vector<int32_t> tb(e_count + 1, 0), st(e_count), te;
  int max_context = 0;
  for (int e = 0; e < e_count; ++e) {
    st[e] = entries[e].first;
    tb[e + 1] = tb[e] + entries[e].second;
    for (int t = 0; t < entries[e].second; ++t) te.push_back(e);
    max_context = std::max(max_context, entries[e].first + entries[e].second);
  }
  const int max_blocks = (max_context + kBlockSize - 1) / kBlockSize;
  std::vector<int32_t> ids(static_cast<size_t>(e_count) * max_blocks);
  std::iota(ids.begin(), ids.end(), static_cast<int32_t>(first_block));
  std::shuffle(ids.begin(), ids.end(), rng);
  DeviceBatch b;
  ASSIGN_OR_RETURN(b.token_begin, DeviceBuffer<int32_t>::Create(tb.size()));
  ASSIGN_OR_RETURN(b.start, DeviceBuffer<int32_t>::Create(st.size()));
  ASSIGN_OR_RETURN(b.token_entry, DeviceBuffer<int32_t>::Create(te.size()));
  ASSIGN_OR_RETURN(b.tables, DeviceBuffer<int32_t>::Create(ids.size()));
  RETURN_IF_ERROR(b.token_begin.CopyFromHost(tb.data(), tb.size()));
  RETURN_IF_ERROR(b.start.CopyFromHost(st.data(), st.size()));
  RETURN_IF_ERROR(b.token_entry.CopyFromHost(te.data(), te.size()));
  RETURN_IF_ERROR(b.tables.CopyFromHost(ids.data(), ids.size()));
  b.view.num_entries = e_count;
  b.view.num_tokens = tb[e_count];
  b.view.token_begin = b.token_begin.get();
  b.view.start_position = b.start.get();
  b.view.token_entry = b.token_entry.get();
  b.view.block_tables = b.tables.get();
  b.view.max_blocks_per_seq = max_blocks;
  b.view.max_context = max_context;
  return b;
}

// Valid fp16 KV params: scale in [1/64, 1/32); int4 (pairs): zero in [-1, 1) in the high half.
__global__ void FillKvParams(uint16_t* p, int64_t n, bool pairs, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float u = static_cast<float>(x & 0xffffff) / 16777216.0f;
    const bool is_zero = pairs && (i & 1);
    p[i] = __half_as_ushort(__float2half(is_zero ? 2.0f * u - 1.0f : (1.0f + u) / 64.0f));
  }
}

absl::Status Run(bool decode_only) {
  cudaDeviceProp prop;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::printf("GPU: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);

  // Ceilings.
  double copy_gbs = 0, read_gbs = 0, gemm_tflops = 0;
  {
    const int64_t bytes = int64_t{1} << 30;
    ASSIGN_OR_RETURN(auto src, DeviceBuffer<__nv_bfloat16>::Create(bytes / 2));
    ASSIGN_OR_RETURN(auto dst, DeviceBuffer<__nv_bfloat16>::Create(bytes / 2));
    FillBf16<<<1024, 256, 0, stream>>>(src.get(), src.size(), 1, 1.0f);
    ASSIGN_OR_RETURN(const double copy_us,
                     TimePerCall(
                         [&](int) -> absl::Status {
                           BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
                               dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
                           return absl::OkStatus();
                         },
                         1, stream, kTiming));
    copy_gbs = 2.0 * bytes / (copy_us * 1e3);
    ASSIGN_OR_RETURN(const double read_us,
                     TimePerCall(
                         [&](int) -> absl::Status {
                           ReadStream<<<prop.multiProcessorCount * 8, 512, 0, stream>>>(
                               reinterpret_cast<const uint4*>(src.get()), bytes / 16,
                               reinterpret_cast<uint32_t*>(dst.get()));
                           BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
                           return absl::OkStatus();
                         },
                         1, stream, kTiming));
    read_gbs = bytes / (read_us * 1e3);
    const int n = 8192;
    cublasHandle_t blas;
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) return absl::InternalError("cublasCreate");
    cublasSetStream(blas, stream);
    const float alpha = 1, beta = 0;
    ASSIGN_OR_RETURN(
        const double gemm_us,
        TimePerCall(
            [&](int) -> absl::Status {
              // 8192^2 bf16 = 128 MB each: A, B from src, D into dst.
              if (cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, src.get(),
                               CUDA_R_16BF, n, src.get() + int64_t{n} * n, CUDA_R_16BF, n, &beta,
                               dst.get(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
                return absl::InternalError("cublasGemmEx");
              }
              return absl::OkStatus();
            },
            1, stream, kTiming));
    gemm_tflops = 2.0 * n * n * double{n} / (gemm_us * 1e6);
    cublasDestroy(blas);
  }
  std::printf(
      "ceilings: D2D copy %.0f GB/s (read + write), streaming read %.0f GB/s, "
      "cuBLAS bf16 GEMM %.0f TFLOP/s\n\n",
      copy_gbs, read_gbs, gemm_tflops);

  // One KV pool for the largest case: 64 sequences x 128K positions (21.5 GB for K and V).
  const int64_t pool_blocks = int64_t{64} * (131072 / kBlockSize) + 64;
  const int64_t pool_elems = pool_blocks * kBlockSize * kKvHeads * kHeadDim;
  ASSIGN_OR_RETURN(auto k_pool, DeviceBuffer<__nv_bfloat16>::Create(pool_elems));
  ASSIGN_OR_RETURN(auto v_pool, DeviceBuffer<__nv_bfloat16>::Create(pool_elems));
  FillBf16<<<4096, 256, 0, stream>>>(k_pool.get(), pool_elems, 2, 1.0f);
  FillBf16<<<4096, 256, 0, stream>>>(v_pool.get(), pool_elems, 3, 1.0f);
  const PagedKvLayer cache{k_pool.get(), v_pool.get(), static_cast<int>(pool_blocks),
                           kBlockSize,   kKvHeads,     kHeadDim};
  const int64_t max_tokens = 4096 + 512;
  ASSIGN_OR_RETURN(auto q, DeviceBuffer<float>::Create(max_tokens * kHeads * kHeadDim));
  ASSIGN_OR_RETURN(auto out, DeviceBuffer<float>::Create(max_tokens * kHeads * kHeadDim));
  FillRandomFloat<<<1024, 256, 0, stream>>>(q.get(), q.size(), 4, 1.7f);
  const size_t ws_bytes = PagedAttentionWorkspaceBytes(max_tokens, kHeads, kHeadDim, 131072 + 4096);
  ASSIGN_OR_RETURN(auto ws, DeviceBuffer<uint8_t>::Create(static_cast<int64_t>(ws_bytes)));
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  std::mt19937_64 rng(42);

  std::printf(
      "decode (20 q heads, 5 KV heads, head_dim 128, bf16 KV, block 16; the CUDA-core kernel, "
      "the default, beside the tensor-core one, decode_tensor_cores_bf16)\n");
  std::printf(
      "| batch | context | us | KV MB read | GB/s | %% of copy | %% of read | "
      "us incl. prefill launch | us, 1 split | us, tensor cores | GB/s | %% of read |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int batch : {1, 16, 64, 256}) {
    for (int context : {128, 512, 1024, 4096, 32768, 131072}) {
      // Short contexts at large batches (decode of many short requests), long ones at small.
      if ((context < 1024 && batch < 64) || int64_t{batch} * context > int64_t{64} * 131072) {
        continue;
      }
      const int64_t blocks = int64_t{batch} * (context / kBlockSize);
      const int64_t kv_bytes = 2 * int64_t{batch} * context * kRowBytes;
      const int copies = static_cast<int>(std::min<int64_t>(
          std::max<int64_t>(1, (kRotationBytes + kv_bytes - 1) / kv_bytes), pool_blocks / blocks));
      std::vector<DeviceBatch> batches;
      for (int c = 0; c < copies; ++c) {
        // Decode at position context - 1: `context` keys per sequence.
        std::vector<std::pair<int, int>> entries(batch, {context - 1, 1});
        ASSIGN_OR_RETURN(auto b, MakeBatch(entries, c * blocks, rng));
        batches.push_back(std::move(b));
      }
      auto timed = [&](int prefill_bound, int splits, bool tensor_cores = false) {
        return TimePerCall(
            [&](int i) -> absl::Status {
              AttentionBatch view = batches[i % copies].view;
              view.max_prefill_tokens = prefill_bound;
              PagedAttentionOptions options;
              options.decode_splits = splits;
              options.decode_tensor_cores_bf16 = tensor_cores;
              return PagedAttentionWithOptions(q.get(), view, cache, kHeads, scale, out.get(),
                                               ws.get(), ws_bytes, options, stream);
            },
            copies, stream, kTiming);
      };
      ASSIGN_OR_RETURN(const double us, timed(0, 0));
      ASSIGN_OR_RETURN(const double us_prefill_launch, timed(-1, 0));
      ASSIGN_OR_RETURN(const double us_one_split, timed(0, 1));
      ASSIGN_OR_RETURN(const double us_tensor_cores, timed(0, 0, true));
      const double gbs = kv_bytes / (us * 1e3), tc = kv_bytes / (us_tensor_cores * 1e3);
      std::printf(
          "| %d | %d | %.1f | %.1f | %.0f | %.0f%% | %.0f%% | %.1f | %.1f | %.1f | %.0f | %.0f%% "
          "|\n",
          batch, context, us, kv_bytes / 1e6, gbs, 100 * gbs / copy_gbs, 100 * gbs / read_gbs,
          us_prefill_launch, us_one_split, us_tensor_cores, tc, 100 * tc / read_gbs);
      std::fflush(stdout);
    }
  }

  if (decode_only) {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));
    return absl::OkStatus();
  }

  // Quantized caches: the tensor-core decode kernel (default) beside the CUDA-core one, on random
  // bytes with valid fp16 params (scale in [1/64, 1/32), int4 zero in [-1, 1)).
  for (KvDtype dtype : {KvDtype::kInt8, KvDtype::kInt4}) {
    const int64_t rows = pool_blocks * kBlockSize;
    const int64_t data_bytes = rows * kKvHeads * KvHeadBytes(dtype, kHeadDim);
    const int64_t param_halves = rows * kKvHeads * KvParamHalves(dtype);
    // The bf16 pools' bytes hold the data planes (K in k_pool, V in v_pool); params separately.
    ASSIGN_OR_RETURN(auto kp, DeviceBuffer<uint16_t>::Create(param_halves));
    ASSIGN_OR_RETURN(auto vp, DeviceBuffer<uint16_t>::Create(param_halves));
    FillRandomWords<<<4096, 256, 0, stream>>>(reinterpret_cast<uint32_t*>(k_pool.get()),
                                              data_bytes / 4, 5);
    FillRandomWords<<<4096, 256, 0, stream>>>(reinterpret_cast<uint32_t*>(v_pool.get()),
                                              data_bytes / 4, 6);
    FillKvParams<<<4096, 256, 0, stream>>>(kp.get(), param_halves, dtype == KvDtype::kInt4, 7);
    FillKvParams<<<4096, 256, 0, stream>>>(vp.get(), param_halves, dtype == KvDtype::kInt4, 8);
    PagedKvLayer qcache = cache;
    qcache.dtype = dtype;
    qcache.k_params = kp.get();
    qcache.v_params = vp.get();
    const int64_t position_bytes = PagedKvBytesPerPosition(dtype, kKvHeads, kHeadDim);
    std::printf("\ndecode, %s KV (%lld bytes per position and layer with params)\n",
                KvDtypeName(dtype), static_cast<long long>(position_bytes));
    std::printf(
        "| batch | context | us, tensor cores | GB/s | %% of read | us, tensor cores, 3 blocks/SM "
        "| "
        "us, CUDA cores | GB/s | %% of read |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int batch : {1, 16, 64}) {
      for (int context : {4096, 32768, 131072}) {
        const int64_t blocks = int64_t{batch} * (context / kBlockSize);
        const int64_t kv_bytes = int64_t{batch} * context * position_bytes;
        const int copies = static_cast<int>(
            std::min<int64_t>(std::max<int64_t>(1, (kRotationBytes + kv_bytes - 1) / kv_bytes),
                              pool_blocks / blocks));
        std::vector<DeviceBatch> batches;
        for (int c = 0; c < copies; ++c) {
          std::vector<std::pair<int, int>> entries(batch, {context - 1, 1});
          ASSIGN_OR_RETURN(auto b, MakeBatch(entries, c * blocks, rng));
          batches.push_back(std::move(b));
        }
        double us[3];  // CUDA cores, tensor cores (default), tensor cores bounded for 3 blocks
        for (int variant = 2; variant >= 0; --variant) {
          ASSIGN_OR_RETURN(us[variant], TimePerCall(
                                            [&](int i) -> absl::Status {
                                              AttentionBatch view = batches[i % copies].view;
                                              view.max_prefill_tokens = 0;
                                              PagedAttentionOptions options;
                                              options.decode_tensor_cores = variant >= 1;
                                              if (variant == 2)
                                                options.decode_mma_blocks_per_sm = 3;
                                              return PagedAttentionWithOptions(
                                                  q.get(), view, qcache, kHeads, scale, out.get(),
                                                  ws.get(), ws_bytes, options, stream);
                                            },
                                            copies, stream, kTiming));
        }
        const double tc = kv_bytes / (us[1] * 1e3), cc = kv_bytes / (us[0] * 1e3);
        std::printf("| %d | %dK | %.1f | %.0f | %.0f%% | %.1f | %.1f | %.0f | %.0f%% |\n", batch,
                    context / 1024, us[1], tc, 100 * tc / read_gbs, us[2], us[0], cc,
                    100 * cc / read_gbs);
        std::fflush(stdout);
      }
    }
  }
  FillBf16<<<4096, 256, 0, stream>>>(k_pool.get(), pool_elems, 2, 1.0f);
  FillBf16<<<4096, 256, 0, stream>>>(v_pool.get(), pool_elems, 3, 1.0f);

  // The split heuristic's evidence: time per call against forced split counts.
  std::printf(
      "\ndecode split sweep (us per call; splits capped at context / 32)\n"
      "| batch | context |");
  const std::vector<int> sweep = {1, 2, 4, 8, 14, 16, 32, 64, 79, 128, 256};
  for (int s : sweep) std::printf(" %d |", s);
  std::printf("\n|---:|---:|");
  for (size_t i = 0; i < sweep.size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (auto [batch, context] : {std::pair<int, int>{1, 1024},
                                {1, 4096},
                                {1, 32768},
                                {1, 131072},
                                {16, 32768},
                                {64, 4096},
                                {64, 32768}}) {
    const int64_t blocks = int64_t{batch} * (context / kBlockSize);
    const int64_t kv_bytes = 2 * int64_t{batch} * context * kRowBytes;
    const int copies = static_cast<int>(std::min<int64_t>(
        std::max<int64_t>(1, (kRotationBytes + kv_bytes - 1) / kv_bytes), pool_blocks / blocks));
    std::vector<DeviceBatch> batches;
    for (int c = 0; c < copies; ++c) {
      std::vector<std::pair<int, int>> entries(batch, {context - 1, 1});
      ASSIGN_OR_RETURN(auto b, MakeBatch(entries, c * blocks, rng));
      batches.push_back(std::move(b));
    }
    std::printf("| %d | %dK |", batch, context / 1024);
    for (int splits : sweep) {
      ASSIGN_OR_RETURN(const double us, TimePerCall(
                                            [&](int i) -> absl::Status {
                                              AttentionBatch view = batches[i % copies].view;
                                              view.max_prefill_tokens = 0;
                                              PagedAttentionOptions options;
                                              options.decode_splits = splits;
                                              return PagedAttentionWithOptions(
                                                  q.get(), view, cache, kHeads, scale, out.get(),
                                                  ws.get(), ws_bytes, options, stream);
                                            },
                                            copies, stream, kTiming));
      std::printf(" %.1f |", us);
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  std::printf("\nprefill (one chunk; TFLOP/s = 4 x 128 x 20 x causal (query, key) pairs / time)\n");
  std::printf(
      "| tokens | start | us (hi+lo bf16) | TFLOP/s | us (plain bf16) | TFLOP/s |\n"
      "|---:|---:|---:|---:|---:|---:|\n");
  for (auto [tokens, start] : {std::pair<int, int>{512, 0}, {4096, 0}, {512, 32768}}) {
    const int context = start + tokens;
    const int64_t blocks = (context + kBlockSize - 1) / kBlockSize;
    const int64_t kv_bytes = 2 * int64_t{context} * kRowBytes;
    const int copies = static_cast<int>(std::min<int64_t>(
        std::max<int64_t>(1, (kRotationBytes + kv_bytes - 1) / kv_bytes), pool_blocks / blocks));
    std::vector<DeviceBatch> batches;
    for (int c = 0; c < copies; ++c) {
      ASSIGN_OR_RETURN(auto b, MakeBatch({{start, tokens}}, c * blocks, rng));
      batches.push_back(std::move(b));
    }
    double pairs = 0;
    for (int t = 0; t < tokens; ++t) pairs += start + t + 1;
    const double flop = 4.0 * kHeadDim * kHeads * pairs;
    double us[2];
    for (int split = 1; split >= 0; --split) {
      ASSIGN_OR_RETURN(us[split], TimePerCall(
                                      [&](int i) -> absl::Status {
                                        PagedAttentionOptions options;
                                        options.prefill_split_bf16 = split == 1;
                                        return PagedAttentionWithOptions(
                                            q.get(), batches[i % copies].view, cache, kHeads, scale,
                                            out.get(), ws.get(), ws_bytes, options, stream);
                                      },
                                      copies, stream, kTiming));
    }
    std::printf("| %d | %d | %.1f | %.1f | %.1f | %.1f |\n", tokens, start, us[1],
                flop / (us[1] * 1e6), us[0], flop / (us[0] * 1e6));
    std::fflush(stdout);
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitserve::cuda

int main(int argc, char** argv) {
  const bool decode_only = argc == 2 && std::string(argv[1]) == "--bf16-decode-only";
  if (argc > 1 && !decode_only) {
    std::fprintf(stderr, "usage: attention_benchmark [--bf16-decode-only]\n");
    return 2;
  }
  const absl::Status status = bitserve::cuda::Run(decode_only);
  if (!status.ok()) {
    std::fprintf(stderr, "attention_benchmark: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
