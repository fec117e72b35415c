// Long context on one GPU (not a test): for each KV element type, the KV capacity in tokens of
// the `bitnet-2b4t` preset (random weights, the real shapes), a real chunked prefill of one long
// sequence, then batch-1 decode at growing context lengths.
//
//   long_context_benchmark [--model DIR] [--dtypes bf16,int8,int4] [--prefill 131072]
//                          [--contexts 4096,32768,131072,1048576] [--steps 16]
//
// Contexts beyond the real prefill reuse its KV blocks cyclically in the block table (positions
// L >= prefill read the keys and values written for L mod prefill): decode reads exactly as many
// real, quantized keys and values as a sequence of that length would, without spending the
// quadratic prefill of a million tokens in a benchmark. The new token's position starts a fresh
// block, so no shared block is written. Decode steps are Engine::Step (greedy, CUDA graphs,
// token back to the host), host-timed, medians after 3 warm-up steps. The marginal KV bandwidth
// is (KV bytes at L - KV bytes at the shortest context) / (step time difference): what attention
// streams per extra second, independent of the fixed per-step cost of the weights.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/cuda/engine_benchmark_setup.h"
#include "kernels/kv_cache_format.h"
#include "runtime/engine/cuda_engine.h"
#include "runtime/engine/engine.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int Run(int argc, char** argv) {
  std::string model, dtypes = "bf16,int8,int4", contexts = "4096,32768,131072,1048576";
  int64_t prefill = 131072;
  int steps = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") {
      model = value;
    } else if (flag == "--dtypes") {
      dtypes = value;
    } else if (flag == "--contexts") {
      contexts = value;
    } else if (flag == "--prefill") {
      prefill = std::atoll(value.c_str());
    } else if (flag == "--steps") {
      steps = std::atoi(value.c_str());
    } else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  const std::vector<int64_t> lengths = ParseNumberList(contexts);
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  const bool generated = model.empty();
  if (generated) {
    auto written = WriteBenchmarkModel("bitnet-2b4t", "bitserve_long_context_2b4t");
    if (!written.ok()) {
      std::cerr << written.status() << "\n";
      return 1;
    }
    model = written->string();
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("GPU: %s\n", prop.name);

  for (absl::string_view name : absl::StrSplit(dtypes, ',')) {
    auto dtype = ParseKvDtype(name);
    if (!dtype.ok()) {
      std::cerr << dtype.status() << "\n";
      return 2;
    }
    EngineOptions options;
    options.device = "cuda";
    options.kv_dtype = *dtype;
    options.max_batch_tokens = 8192;
    options.max_model_len = longest + 64;  // beyond the 4096 trained positions: RoPE goes on
    options.kv_memory_fraction = 0.92;
    const auto t0 = Clock::now();
    auto loaded = LoadCudaEngine(model, options);
    if (!loaded.ok()) {
      std::cerr << name << ": " << loaded.status() << "\n";
      continue;
    }
    Engine& engine = **loaded;
    const CudaEngineFootprint& fp = *GetCudaEngineFootprint(engine);
    const int bs = engine.block_size();
    const int64_t capacity = static_cast<int64_t>(engine.num_kv_blocks()) * bs;
    std::printf(
        "\n%s KV: %.1f KB per token, %d blocks of %d = %ld tokens of context (%.1f GB), loaded in "
        "%.1f s\n",
        std::string(name).c_str(), fp.kv_bytes_per_position / 1e3, engine.num_kv_blocks(), bs,
        static_cast<long>(capacity), fp.kv_cache_bytes / 1e9, Seconds(Clock::now() - t0));

    // Real chunked prefill of one sequence, into blocks [0, prefill / bs).
    const int64_t real = std::min<int64_t>(prefill, capacity - 2 * bs) / bs * bs;
    std::vector<int32_t> table;
    for (int64_t b = 0; b < real / bs; ++b) table.push_back(static_cast<int32_t>(b));
    const int vocab = engine.config().vocab_size;
    std::vector<float> unused;
    const auto p0 = Clock::now();
    double last_report = 0;
    for (int64_t start = 0; start < real; start += engine.max_batch_tokens()) {
      const int64_t n = std::min<int64_t>(engine.max_batch_tokens(), real - start);
      std::vector<int32_t> chunk(n);
      for (int64_t t = 0; t < n; ++t)
        chunk[t] = static_cast<int32_t>(((start + t) * 104729 + 3) % vocab);
      const std::span<const int32_t> chunk_table(table.data(), (start + n + bs - 1) / bs);
      const absl::Status st =
          engine.Forward(std::vector<BatchEntry>{{static_cast<int32_t>(start), chunk, chunk_table,
                                                  LogitsWanted::kNone}},
                         &unused);
      if (!st.ok()) {
        std::cerr << "prefill: " << st << "\n";
        return 1;
      }
      const double elapsed = Seconds(Clock::now() - p0);
      if (elapsed - last_report > 10 || start + n == real) {
        std::printf("  prefill %ld tokens in %.1f s (%.0f tokens/s so far)\n",
                    static_cast<long>(start + n), elapsed, (start + n) / elapsed);
        last_report = elapsed;
      }
    }

    std::printf(
        "| context | step (ms) | tokens/s | KV read per step (GB) | marginal KV bandwidth (GB/s) "
        "|\n");
    std::printf("|---:|---:|---:|---:|---:|\n");
    double base_ms = 0, base_bytes = 0;
    const int32_t fresh = static_cast<int32_t>(real / bs);  // first block no position above writes
    for (const int64_t length : lengths) {
      if (length + steps + 8 > capacity && length > real) {
        // Cyclic reuse needs no memory, but be honest: a real sequence this long must fit.
        std::printf("| %ld | does not fit (capacity %ld tokens) | | | |\n",
                    static_cast<long>(length), static_cast<long>(capacity));
        continue;
      }
      // Positions [0, length - 1) read real blocks (cyclically), the new tokens go to fresh blocks.
      const int64_t old_blocks = (length - 1) / bs;
      std::vector<int32_t> long_table(old_blocks);
      for (int64_t b = 0; b < old_blocks; ++b)
        long_table[b] = static_cast<int32_t>(b % (real / bs));
      for (int b = 0; b < (steps + 3 + bs) / bs + 1; ++b) long_table.push_back(fresh + b);
      const int32_t first_position = static_cast<int32_t>(old_blocks * bs);
      SamplingParams greedy;
      SampleSpec spec;
      spec.params = &greedy;
      std::vector<int32_t> token = {1};
      std::vector<double> times;
      for (int s = 0; s < steps + 3; ++s) {
        std::vector<SampleResult> results;
        const auto a = Clock::now();
        const absl::Status st = engine.Step(
            std::vector<BatchEntry>{{first_position + s, token, long_table, LogitsWanted::kLast}},
            std::vector<SampleSpec>{spec}, &results);
        const double ms = Seconds(Clock::now() - a) * 1e3;
        if (!st.ok()) {
          std::cerr << "decode at " << length << ": " << st << "\n";
          return 1;
        }
        if (s >= 3) times.push_back(ms);
        token[0] = results[0].token;
      }
      const double ms = Median(times);
      const double bytes =
          static_cast<double>(fp.kv_bytes_per_position) * (first_position + steps / 2);
      if (base_ms == 0) {
        base_ms = ms;
        base_bytes = bytes;
      }
      const double marginal =
          ms > base_ms ? (bytes - base_bytes) / ((ms - base_ms) * 1e-3) / 1e9 : 0;
      std::printf("| %ld | %.3f | %.0f | %.2f | %s |\n", static_cast<long>(length), ms, 1e3 / ms,
                  bytes / 1e9,
                  marginal > 0 ? std::to_string(static_cast<int>(marginal)).c_str() : "-");
      std::fflush(stdout);
    }
  }
  if (generated) {
    std::error_code ignored;
    fs::remove_all(model, ignored);
  }
  return 0;
}

}  // namespace
}  // namespace bitserve

int main(int argc, char** argv) { return bitserve::Run(argc, argv); }
