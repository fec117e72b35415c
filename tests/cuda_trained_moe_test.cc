// The trained MoE fixture (models/shakespeare-moe) on the GPU against the CPU engine: held-out
// perplexity within 0.1% and greedy continuations identical, for every KV dtype the GPU offers
// (the CPU keeps float32 K/V against the GPU's bf16, the same dtype for int8 / int4).
#include <cuda_runtime.h>

#include <algorithm>
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

// Greedy continuation of `prompt` by `n` tokens: one prefill, then one decode step per token.
std::vector<int32_t> Greedy(Engine& engine, std::vector<int32_t> prompt, int n) {
  std::vector<int32_t> table(16);
  for (int i = 0; i < 16; ++i) table[i] = i;
  const int vocab = engine.config().vocab_size;
  std::vector<int32_t> out;
  std::vector<float> logits;
  int32_t position = 0;
  std::vector<int32_t> feed = prompt;
  for (int i = 0; i < n; ++i) {
    BatchEntry e{position, feed, table, LogitsWanted::kLast};
    const absl::Status s = engine.Forward({&e, 1}, &logits);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return out;
    position += static_cast<int32_t>(feed.size());
    const int32_t next = static_cast<int32_t>(
        std::max_element(logits.begin(), logits.begin() + vocab) - logits.begin());
    out.push_back(next);
    feed = {next};
  }
  return out;
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

TEST_P(CudaTrainedMoe, GreedyContinuationsEqualTheCpu) {
  auto cpu = Load("cpu", cpu_kv());
  auto gpu = Load("cuda", gpu_kv());
  ASSERT_TRUE(cpu && gpu);
  auto tokenizer = Tokenizer::Load(kModel);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const char* prompt : {"ROMEO:\nBut soft, what light", "First Citizen:\nBefore we proceed",
                             "KING HENRY:\nOnce more unto the"}) {
    std::vector<int32_t> ids = {cpu->config().bos_token_id};
    const std::vector<int32_t> body = (*tokenizer)->Encode(prompt);
    ids.insert(ids.end(), body.begin(), body.end());
    EXPECT_EQ(Greedy(*gpu, ids, 64), Greedy(*cpu, ids, 64)) << prompt;
  }
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, CudaTrainedMoe,
                         ::testing::Values(KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4),
                         [](const auto& info) { return std::string(KvDtypeName(info.param)); });

}  // namespace
}  // namespace bitserve
