// End-to-end benchmark of the CUDA engine (not a test): decode tokens/s of a model (default: the
// `bitnet-2b4t` preset, random weights with the real shapes, written to a temporary folder) at
// several batch sizes after 512-token prompts, beside the batch-1 bandwidth floor (bytes one
// decode step must read / the measured device-to-device copy bandwidth), and prefill tokens/s.
//
//   engine_benchmark [--model DIR] [--load-format dummy] [--batches 1,16,64,256] [--prompt 512]
//                    [--steps 32] [--prefill 512,4096] [--profile-steps N]
//                    [--lm-head-dtype bf16|int8]
//
// --load-format dummy: random weights of DIR's config.json made on the GPU (`make-model
// --config-only`), for shapes whose checkpoint would not fit the disk (qwen3-235b-a22b).
// MoE models: the floor reads the experts a step can touch, E * (1 - (1 - k/E)^batch) of each
// layer's E (random routing), besides every dense weight.
//
// --profile-steps N: the last N timed decode steps of each batch run between cudaProfilerStart and
// cudaProfilerStop, so that `ncu --profile-from-start off` sees only them (no prefill, no warm-up;
// bench/cuda/decode_step_breakdown.sh).
//
// Decode steps are Engine::Step with greedy sampling (CUDA graphs, tokens back to the host), timed
// on the host clock around each synchronous step: the number includes every per-step host cost.
// Medians over the timed steps after 3 warm-up steps (the first captures the graph).
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/cuda/engine_benchmark_setup.h"
#include "bench/cuda/graph_timing.cuh"
#include "runtime/engine/cuda_engine.h"
#include "runtime/engine/engine.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int Run(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they are measured, also into a pipe
  std::string model, batches = "1,16,64,256", prefills = "512,4096", load_format, lm_head_dtype;
  int prompt = 512, steps = 32, profile_steps = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model")
      model = value;
    else if (flag == "--batches")
      batches = value;
    else if (flag == "--prefill")
      prefills = value;
    else if (flag == "--prompt")
      prompt = std::atoi(value.c_str());
    else if (flag == "--steps")
      steps = std::atoi(value.c_str());
    else if (flag == "--load-format")
      load_format = value;
    else if (flag == "--lm-head-dtype")
      lm_head_dtype = value;
    else if (flag == "--profile-steps")
      profile_steps = std::atoi(value.c_str());
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  const bool generated = model.empty();
  if (generated) {
    const auto t0 = Clock::now();
    auto written = WriteBenchmarkModel("bitnet-2b4t", "bitserve_engine_benchmark_2b4t");
    if (!written.ok()) {
      std::cerr << written.status() << "\n";
      return 1;
    }
    model = written->string();
    std::printf("wrote bitnet-2b4t preset to %s in %.1f s\n", model.c_str(),
                std::chrono::duration<double>(Clock::now() - t0).count());
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double copy_bw = cuda::CopyBandwidth();
  std::printf("GPU: %s; device-to-device copy bandwidth %.0f GB/s (read + written)\n", prop.name,
              copy_bw / 1e9);

  EngineOptions options;
  options.device = "cuda";
  options.max_batch_tokens = 8192;
  if (!load_format.empty()) {
    auto format = ParseLoadFormat(load_format);
    if (!format.ok()) {
      std::cerr << format.status() << "\n";
      return 2;
    }
    options.load_format = *format;
  }
  if (!lm_head_dtype.empty()) {
    auto dtype = ParseLmHeadDtype(lm_head_dtype);
    if (!dtype.ok()) {
      std::cerr << dtype.status() << "\n";
      return 2;
    }
    options.lm_head_dtype = *dtype;
  }
  const auto t0 = Clock::now();
  auto loaded = LoadCudaEngine(model, options);
  if (!loaded.ok()) {
    std::cerr << loaded.status() << "\n";
    return 1;
  }
  Engine& engine = **loaded;
  const CudaEngineFootprint& fp = *GetCudaEngineFootprint(engine);
  std::printf(
      "loaded in %.1f s: ternary %.1f MB, LM head %.1f MB, KV cache %d blocks (%.1f GB), "
      "scratch %.2f GB\n",
      std::chrono::duration<double>(Clock::now() - t0).count(), fp.ternary_weight_bytes / 1e6,
      fp.lm_head_bytes / 1e6, engine.num_kv_blocks(), fp.kv_cache_bytes / 1e9,
      fp.scratch_bytes / 1e9);
  const int vocab = engine.config().vocab_size;
  const int bs = engine.block_size();

  std::printf("\n| batch | prompt | step (ms, median) | tokens/s | floor (ms) | step / floor |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  for (int batch : ParseNumberList(batches)) {
    const int positions = prompt + steps + 8;
    const int per_seq = (positions + bs - 1) / bs;
    if (static_cast<int64_t>(per_seq) * batch > engine.num_kv_blocks()) {
      std::printf("| %d | %d | (KV cache too small) | | | |\n", batch, prompt);
      continue;
    }
    std::vector<std::vector<int32_t>> tables(batch), prompts(batch);
    for (int s = 0; s < batch; ++s) {
      for (int b = 0; b < per_seq; ++b) tables[s].push_back(s * per_seq + b);
      for (int t = 0; t < prompt; ++t) prompts[s].push_back((s * 7919 + t * 104729) % vocab);
    }
    // Prefill in batches of whole prompts within max_batch_tokens.
    std::vector<float> unused;
    const int per_forward = std::max(1, engine.max_batch_tokens() / prompt);
    for (int s0 = 0; s0 < batch; s0 += per_forward) {
      std::vector<BatchEntry> entries;
      for (int s = s0; s < std::min(batch, s0 + per_forward); ++s) {
        entries.push_back({0, prompts[s], tables[s], LogitsWanted::kNone});
      }
      const absl::Status st = engine.Forward(entries, &unused);
      if (!st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
    }
    SamplingParams greedy;
    std::vector<SampleSpec> specs(batch);
    for (SampleSpec& spec : specs) spec.params = &greedy;
    std::vector<std::vector<int32_t>> next(batch, std::vector<int32_t>{1});
    std::vector<double> times;
    for (int step = 0; step < steps + 3; ++step) {
      std::vector<BatchEntry> entries;
      for (int s = 0; s < batch; ++s) {
        entries.push_back({prompt + step, next[s], tables[s], LogitsWanted::kLast});
      }
      std::vector<SampleResult> results;
      const bool profiled = step >= steps + 3 - profile_steps;
      if (profiled) cudaProfilerStart();
      const auto a = Clock::now();
      const absl::Status st = engine.Step(entries, specs, &results);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - a).count();
      if (profiled) cudaProfilerStop();
      if (!st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
      if (step >= 3) times.push_back(ms);
      for (int s = 0; s < batch; ++s) next[s][0] = results[s].token;
    }
    const double ms = Median(times);
    // What one step must read: every dense weight once, the experts the batch can touch (MoE),
    // and each sequence's cached keys and values.
    const ModelConfig& c = engine.config();
    double experts_read = 0;
    if (c.is_moe()) {
      const double e = c.num_experts, k = c.num_experts_per_tok;
      experts_read = fp.expert_weight_bytes * (1.0 - std::pow(1.0 - k / e, batch));
    }
    const double bytes =
        static_cast<double>(fp.ternary_weight_bytes - fp.expert_weight_bytes + fp.lm_head_bytes +
                            fp.norm_bytes) +
        experts_read + static_cast<double>(fp.kv_bytes_per_position) * (prompt + steps / 2) * batch;
    const double floor_ms = bytes / copy_bw * 1e3;
    std::printf("| %d | %d | %.3f | %.0f | %.3f | %.2fx |\n", batch, prompt, ms, batch / ms * 1e3,
                floor_ms, ms / floor_ms);
  }

  std::printf("\n| prefill tokens | time (ms, median) | tokens/s |\n|---:|---:|---:|\n");
  for (int n : ParseNumberList(prefills)) {
    if (n > engine.max_batch_tokens() || n > engine.max_model_len()) {
      std::printf("| %d | (over max_batch_tokens or max_model_len) | |\n", n);
      continue;
    }
    std::vector<int32_t> tokens(n), table;
    for (int t = 0; t < n; ++t) tokens[t] = (t * 104729 + 3) % vocab;
    for (int b = 0; b < (n + bs - 1) / bs; ++b) table.push_back(b);
    std::vector<double> times;
    std::vector<float> logits;
    for (int rep = 0; rep < 6; ++rep) {
      const auto a = Clock::now();
      const absl::Status st =
          engine.Forward(std::vector<BatchEntry>{{0, tokens, table, LogitsWanted::kLast}}, &logits);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - a).count();
      if (!st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
      if (rep >= 1) times.push_back(ms);
    }
    const double ms = Median(times);
    std::printf("| %d | %.2f | %.0f |\n", n, ms, n / ms * 1e3);
  }
  if (generated) {
    std::error_code ignored;
    fs::remove_all(model, ignored);  // 1.2 GB of random weights
  }
  return 0;
}

}  // namespace
}  // namespace bitserve

int main(int argc, char** argv) { return bitserve::Run(argc, argv); }
