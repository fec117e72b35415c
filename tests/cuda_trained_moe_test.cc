// The trained MoE fixture (models/shakespeare-moe) on the GPU against the CPU engine: held-out
// perplexity within 0.1% and the same greedy tokens, for every KV dtype the GPU offers
// (the CPU keeps float32 K/V against the GPU's bf16, the same dtype for int8 / int4); greedy
// tokens compared in lockstep, near ties of the CPU's logits excepted.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "base/file_io.h"
#include "gtest/gtest.h"
#include "runtime/engine/cuda_engine.h"
#include "runtime/engine/engine.h"
#include "runtime/generation/perplexity.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

const fs::path kModel = "models/shakespeare-moe";
constexpr char kExcerpt[] = "models/data/shakespeare-valid-excerpt.txt";

bool HaveGpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

std::unique_ptr<Engine> Load(const std::string& device, KvDtype kv) {
  EngineOptions o;
  o.device = device;
  o.kv_dtype = kv;
  o.max_sequences = 1;
  o.num_kv_blocks = 64;
  absl::StatusOr<std::unique_ptr<Engine>> e =
      device == "cpu" ? LoadEngine(kModel, o) : LoadCudaEngine(kModel, o, CudaEngineOptions{});
  EXPECT_TRUE(e.ok()) << device << ": " << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

// Greedy continuation of `prompt` by `n` tokens on the CPU, with the GPU fed the same tokens in
// lockstep (one prefill, then one decode step per token): per step the CPU's argmax, whether the
// GPU's differs, and by how much the CPU prefers its own token there, in row standard deviations
// of the CPU's logits (a near tie when small).
struct Lockstep {
  std::vector<int32_t> tokens;
  int differing = 0;
  double worst_margin = 0;  // the largest CPU margin (in row stds) where the GPU chose otherwise
};

Lockstep GreedyLockstep(Engine& cpu, Engine& gpu, std::vector<int32_t> prompt, int n) {
  std::vector<int32_t> table(16);
  for (int i = 0; i < 16; ++i) table[i] = i;
  const int vocab = cpu.config().vocab_size;
  Lockstep r;
  std::vector<float> cl, gl;
  int32_t position = 0;
  std::vector<int32_t> feed = prompt;
  for (int i = 0; i < n; ++i) {
    BatchEntry ce{position, feed, table, LogitsWanted::kLast};
    BatchEntry ge{position, feed, table, LogitsWanted::kLast};
    const absl::Status cs = cpu.Forward({&ce, 1}, &cl), gs = gpu.Forward({&ge, 1}, &gl);
    EXPECT_TRUE(cs.ok() && gs.ok()) << cs << " " << gs;
    if (!cs.ok() || !gs.ok()) return r;
    position += static_cast<int32_t>(feed.size());
    const auto c_top = std::max_element(cl.begin(), cl.begin() + vocab) - cl.begin();
    const auto g_top = std::max_element(gl.begin(), gl.begin() + vocab) - gl.begin();
    if (c_top != g_top) {
      double mean = 0, sq = 0;
      for (int v = 0; v < vocab; ++v) mean += cl[v];
      mean /= vocab;
      for (int v = 0; v < vocab; ++v) sq += (cl[v] - mean) * (cl[v] - mean);
      const double sd = std::sqrt(sq / vocab);
      ++r.differing;
      r.worst_margin = std::max(r.worst_margin, (cl[c_top] - cl[g_top]) / sd);
    }
    r.tokens.push_back(static_cast<int32_t>(c_top));
    feed = {static_cast<int32_t>(c_top)};
  }
  return r;
}

class CudaTrainedMoe : public ::testing::TestWithParam<KvDtype> {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
  KvDtype gpu_kv() const { return GetParam(); }
  KvDtype cpu_kv() const { return GetParam() == KvDtype::kBf16 ? KvDtype::kF32 : GetParam(); }
};

TEST_P(CudaTrainedMoe, PerplexityWithinATenthOfAPercentOfTheCpu) {
  auto cpu = Load("cpu", cpu_kv());
  auto gpu = Load("cuda", gpu_kv());
  ASSERT_TRUE(cpu && gpu);
  auto tokenizer = Tokenizer::Load(kModel);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto text = ReadFileToString(kExcerpt);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<int32_t> ids = {cpu->config().bos_token_id};
  const std::vector<int32_t> body = (*tokenizer)->Encode(*text);
  ids.insert(ids.end(), body.begin(), body.end());
  auto c = ComputePerplexity(*cpu, ids, 256, 128);
  auto g = ComputePerplexity(*gpu, ids, 256, 128);
  ASSERT_TRUE(c.ok() && g.ok()) << c.status() << " " << g.status();
  EXPECT_EQ(c->tokens, g->tokens);
  EXPECT_NEAR(g->ppl, c->ppl, 0.001 * c->ppl);
  std::cout << "[ numbers  ] shakespeare-moe " << KvDtypeName(gpu_kv()) << " KV: GPU ppl " << g->ppl
            << ", CPU ppl " << c->ppl << " (" << c->tokens << " tokens)" << std::endl;
}

// The GPU picks the CPU's greedy token at every step of three 64-token continuations (fed the
// CPU's tokens), except at near ties of the CPU's logits: within 0.02 row standard deviations, at
// most 6 steps of 192. Measured on an H100 (2026-12-07): bf16 and int8 0 steps; int4 (q and k
// Hadamard-rotated, EngineOptions::kv_rotation) 3 steps, margins <= 7.1e-4 row stds. Free-running
// continuations compared for equality part for good at the first such tie.
TEST_P(CudaTrainedMoe, GreedyContinuationsEqualTheCpu) {
  auto cpu = Load("cpu", cpu_kv());
  auto gpu = Load("cuda", gpu_kv());
  ASSERT_TRUE(cpu && gpu);
  auto tokenizer = Tokenizer::Load(kModel);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  int differing = 0;
  double worst = 0;
  for (const char* prompt : {"ROMEO:\nBut soft, what light", "First Citizen:\nBefore we proceed",
                             "KING HENRY:\nOnce more unto the"}) {
    std::vector<int32_t> ids = {cpu->config().bos_token_id};
    const std::vector<int32_t> body = (*tokenizer)->Encode(prompt);
    ids.insert(ids.end(), body.begin(), body.end());
    const Lockstep r = GreedyLockstep(*cpu, *gpu, ids, 64);
    EXPECT_EQ(r.tokens.size(), 64u) << prompt;
    differing += r.differing;
    worst = std::max(worst, r.worst_margin);
  }
  std::cout << "[ numbers  ] shakespeare-moe " << KvDtypeName(gpu_kv())
            << " KV: GPU argmax differs from the CPU's at " << differing
            << " of 192 steps, CPU margin there at most " << worst << " row stds" << std::endl;
  EXPECT_LE(differing, 6);
  EXPECT_LE(worst, 0.02);
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, CudaTrainedMoe,
                         ::testing::Values(KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4),
                         [](const auto& info) { return std::string(KvDtypeName(info.param)); });

}  // namespace
}  // namespace bitserve
