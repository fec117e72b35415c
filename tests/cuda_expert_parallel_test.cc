// Expert parallelism on CUDA engines (label gpu), on models/shakespeare-moe (8 experts, top-2):
// two ranks holding 4 experts each and their own sequences' KV cache give the one-GPU engine's
// logits (the same kernels over the same rows; the products are per row and the combine runs in
// top-k order, so equal up to the attention's batch-dependent order) and its greedy tokens, also
// in steps where one rank has no tokens, and count the rows their experts ran:
//   - both ranks on GPU 0, exchanging rows through host memory (TCP transport on loopback);
//   - with two GPUs, ranks on cuda:0 and cuda:1 exchanging device memory over NCCL.
// And a CUDA EP engine refuses what cannot be an EP group.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/engine/cuda_engine.h"
#include "runtime/engine/engine.h"
#include "runtime/transport/nccl_expert_exchange.h"
#include "runtime/transport/nccl_transport.h"
#include "runtime/transport/tcp_expert_group_for_tests.h"

namespace bitserve {
namespace {

using std::chrono::milliseconds;
const char kModel[] = "models/shakespeare-moe";

int GpuCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

// Ranks on cuda:0 .. cuda:ranks-1, one NCCL communicator formed in this process.
std::vector<std::shared_ptr<ExpertExchange>> NcclGroup(int ranks) {
  auto id = NewNcclUniqueId();
  EXPECT_TRUE(id.ok()) << id.status();
  std::vector<std::future<absl::StatusOr<std::unique_ptr<NcclTransport>>>> pending;
  for (int r = 0; r < ranks; ++r) {
    pending.push_back(std::async(std::launch::async, [&, r] {
      return NcclTransport::Connect(*id, r, ranks, "cuda:" + std::to_string(r),
                                    milliseconds(60000));
    }));
  }
  std::vector<int> group(ranks);
  for (int r = 0; r < ranks; ++r) group[r] = r;
  std::vector<std::shared_ptr<ExpertExchange>> out;
  for (int r = 0; r < ranks; ++r) {
    auto t = pending[r].get();
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return {};
    auto x = NcclExpertExchange::Create(std::shared_ptr<NcclTransport>(*std::move(t)), group, r);
    EXPECT_TRUE(x.ok()) << x.status();
    out.push_back(*std::move(x));
  }
  return out;
}

EngineOptions Options(const std::string& device) {
  EngineOptions o;
  o.device = device;
  o.block_size = 16;
  o.num_kv_blocks = 16;
  o.max_batch_tokens = 256;
  return o;
}

struct Seq {
  std::vector<int32_t> tokens;
  std::vector<int32_t> table;
};

// The scenario of runtime/engine/expert_parallel_test.cc on CUDA engines: three sequences, rank 0
// runs 0 and 1, rank 1 runs 2; a prefill step, then decodes with rank 1 idle in step 2.
void CheckAgainstOneGpu(std::vector<std::shared_ptr<ExpertExchange>> exchanges,
                        const std::vector<std::string>& devices) {
  ASSERT_EQ(exchanges.size(), 2u);
  auto whole = LoadCudaEngine(kModel, Options("cuda:0"), CudaEngineOptions{.cuda_graphs = false});
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::vector<std::unique_ptr<Engine>> ranks;
  for (int r = 0; r < 2; ++r) {
    EngineOptions o = Options(devices[r]);
    o.expert_owner = {0, 0, 0, 0, 1, 1, 1, 1};
    o.expert_exchange = exchanges[r];
    auto e = LoadEngine(kModel, o);
    ASSERT_TRUE(e.ok()) << e.status();
    ranks.push_back(*std::move(e));
  }
  std::vector<Seq> seqs(3);
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < 20 + 7 * s; ++i) seqs[s].tokens.push_back((i * 131 + 17 * s + 7) % 2000);
    seqs[s].table = {4 * s, 4 * s + 1, 4 * s + 2, 4 * s + 3};
  }
  const int rank_of[] = {0, 0, 1};
  double worst = 0;
  for (int step = 0; step < 6; ++step) {
    std::vector<std::vector<BatchEntry>> per_rank(2);
    std::vector<BatchEntry> all;
    std::vector<std::vector<int32_t>> decode(3);
    for (int s = 0; s < 3; ++s) {
      if (step == 2 && rank_of[s] == 1) continue;
      BatchEntry e;
      if (step == 0) {
        e = {0, seqs[s].tokens, seqs[s].table, LogitsWanted::kAll};
      } else {
        decode[s] = {seqs[s].tokens.back()};
        e = {static_cast<int32_t>(seqs[s].tokens.size()) - 1, decode[s], seqs[s].table,
             LogitsWanted::kLast};
      }
      per_rank[rank_of[s]].push_back(e);
      all.push_back(e);
    }
    std::vector<float> want;
    ASSERT_TRUE((*whole)->Forward(all, &want).ok());
    std::vector<std::vector<float>> got(2);
    std::vector<absl::Status> status(2);
    std::thread other([&] { status[1] = ranks[1]->Forward(per_rank[1], &got[1]); });
    status[0] = ranks[0]->Forward(per_rank[0], &got[0]);
    other.join();
    ASSERT_TRUE(status[0].ok()) << status[0];
    ASSERT_TRUE(status[1].ok()) << status[1];
    std::vector<float> joined = got[0];
    joined.insert(joined.end(), got[1].begin(), got[1].end());
    ASSERT_EQ(joined.size(), want.size()) << "step " << step;
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(joined[i] - want[i]) / scale));
    }
    // Rows counted per rank: only its own experts; together every token's top-2 in every layer.
    const int layers = (*whole)->config().num_hidden_layers;
    int64_t tokens = 0, counted = 0;
    for (const BatchEntry& e : all) tokens += static_cast<int64_t>(e.tokens.size());
    for (int r = 0; r < 2; ++r) {
      const auto rows = ranks[r]->last_step_expert_rows();
      ASSERT_EQ(rows.size(), static_cast<size_t>(layers) * 8);
      for (int l = 0; l < layers; ++l) {
        for (int e = 0; e < 8; ++e) {
          if (e / 4 != r) {
            EXPECT_EQ(rows[l * 8 + e], 0) << "rank " << r << " expert " << e;
          }
          counted += rows[l * 8 + e];
        }
      }
    }
    EXPECT_EQ(counted, tokens * 2 * layers) << "step " << step;
    // Greedy next tokens: the same from both.
    const int64_t vocab = (*whole)->config().vocab_size;
    int64_t row = 0;
    for (int s = 0; s < 3; ++s) {
      if (step == 2 && rank_of[s] == 1) continue;
      const int64_t rows = step == 0 ? static_cast<int64_t>(seqs[s].tokens.size()) : 1;
      const float* a = want.data() + (row + rows - 1) * vocab;
      const float* b = joined.data() + (row + rows - 1) * vocab;
      const int32_t next = static_cast<int32_t>(std::max_element(a, a + vocab) - a);
      EXPECT_EQ(next, std::max_element(b, b + vocab) - b) << "step " << step << " seq " << s;
      seqs[s].tokens.push_back(next);
      row += rows;
    }
  }
  std::printf("EP2 vs one GPU: largest logit difference %.3g of the largest logit\n", worst);
  EXPECT_LT(worst, 2e-3);
}

TEST(CudaExpertParallelTest, TwoRanksOnOneGpuOverTcpGiveTheOneGpuLogits) {
  if (GpuCount() < 1) GTEST_SKIP() << "no CUDA device";
  CheckAgainstOneGpu(TcpExpertGroup(2), {"cuda:0", "cuda:0"});
}

TEST(CudaExpertParallelTest, TwoGpusOverNcclGiveTheOneGpuLogits) {
  if (GpuCount() < 2) GTEST_SKIP() << "needs two CUDA devices";
  auto group = NcclGroup(2);
  ASSERT_EQ(group.size(), 2u);
  CheckAgainstOneGpu(std::move(group), {"cuda:0", "cuda:1"});
}

// bf16 results (serve --ep-results bf16): close to the one-GPU logits, not equal.
TEST(CudaExpertParallelTest, Bf16ResultsStayCloseToTheOneGpuEngine) {
  if (GpuCount() < 1) GTEST_SKIP() << "no CUDA device";
  auto whole = LoadCudaEngine(kModel, Options("cuda:0"), CudaEngineOptions{.cuda_graphs = false});
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto exchanges = TcpExpertGroup(2, ExpertResultDtype::kBf16);
  std::vector<std::unique_ptr<Engine>> ranks;
  for (int r = 0; r < 2; ++r) {
    EngineOptions o = Options("cuda:0");
    o.expert_owner = {0, 0, 0, 0, 1, 1, 1, 1};
    o.expert_exchange = exchanges[r];
    auto e = LoadEngine(kModel, o);
    ASSERT_TRUE(e.ok()) << e.status();
    ranks.push_back(*std::move(e));
  }
  std::vector<int32_t> prompt;
  for (int i = 0; i < 32; ++i) prompt.push_back((i * 131 + 7) % 2000);
  const std::vector<int32_t> table = {0, 1};
  const BatchEntry entry{0, prompt, table, LogitsWanted::kAll};
  std::vector<float> want, got;
  ASSERT_TRUE((*whole)->Forward({&entry, 1}, &want).ok());
  std::thread idle([&] {
    std::vector<float> none;
    EXPECT_TRUE(ranks[1]->Forward({}, &none).ok());
  });
  ASSERT_TRUE(ranks[0]->Forward({&entry, 1}, &got).ok());
  idle.join();
  ASSERT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * double{got[i] - want[i]};
    den += want[i] * double{want[i]};
  }
  const double rel = std::sqrt(num / den);
  std::printf("bf16 expert results on the GPU: logits relative L2 %.5f against one GPU\n", rel);
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 0.02);
}

TEST(CudaExpertParallelTest, RefusesWhatIsNotAnExpertParallelGroup) {
  if (GpuCount() < 1) GTEST_SKIP() << "no CUDA device";
  auto exchanges = TcpExpertGroup(2);
  EngineOptions o = Options("cuda:0");
  o.expert_exchange = exchanges[0];
  o.expert_owner = {0, 0, 0, 0, 1, 1, 1};  // 7 of 8 experts
  EXPECT_EQ(LoadEngine(kModel, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.expert_owner = {1, 1, 1, 1, 1, 1, 1, 1};  // rank 0 owns none
  EXPECT_EQ(LoadEngine(kModel, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.expert_owner = {0, 0, 0, 0, 1, 1, 1, 1};
  auto dense = LoadEngine("models/shakespeare-dense", o);
  EXPECT_EQ(dense.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dense.status().message().find("dense"), std::string::npos) << dense.status();
}

}  // namespace
}  // namespace bitserve
