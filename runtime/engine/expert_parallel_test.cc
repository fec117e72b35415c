// Expert parallelism on CPU engines: two ranks of shakespeare-moe (8 experts, top-2), each
// holding 4 experts and its own sequences' KV cache, exchanging rows over the TCP transport on
// loopback, give exactly (bit for bit) the logits of the single-process engine, also in steps
// where one rank has no tokens; and an EP engine refuses what cannot be an EP group.
#include <cmath>
#include <cstdio>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/transport/tcp_expert_group_for_tests.h"

namespace bitserve {
namespace {

const char kModel[] = "models/shakespeare-moe";

EngineOptions Options() {
  EngineOptions o;
  o.block_size = 16;
  o.num_kv_blocks = 16;
  return o;
}

struct Seq {
  std::vector<int32_t> tokens;
  std::vector<int32_t> table;
};

TEST(ExpertParallelTest, TwoRanksGiveTheSingleEngineLogitsBitForBit) {
  auto whole = LoadEngine(kModel, Options());
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto exchanges = TcpExpertGroup(2);
  std::vector<std::unique_ptr<Engine>> ranks;
  for (int r = 0; r < 2; ++r) {
    EngineOptions o = Options();
    o.expert_owner = {0, 0, 0, 0, 1, 1, 1, 1};
    o.expert_exchange = exchanges[r];
    auto e = LoadEngine(kModel, o);
    ASSERT_TRUE(e.ok()) << e.status();
    ranks.push_back(*std::move(e));
  }
  // Three prompts: rank 0 runs sequences 0 and 1, rank 1 sequence 2 (each in its own KV blocks;
  // the whole engine holds all three).
  std::vector<Seq> seqs(3);
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < 20 + 7 * s; ++i) seqs[s].tokens.push_back((i * 131 + 17 * s + 7) % 2000);
    seqs[s].table = {4 * s, 4 * s + 1, 4 * s + 2, 4 * s + 3};
  }
  const int rank_of[] = {0, 0, 1};
  // Step 0: every prefill. Steps 1-3: decodes, rank 1 idle in step 2 (an empty batch that still
  // takes part in every exchange).
  for (int step = 0; step < 4; ++step) {
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
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(joined[i], want[i]) << "step " << step;
    // Each rank counted the rows its own experts ran (4 experts each, nothing for the others);
    // together, every token's top-2 in each of the 6 layers.
    int64_t tokens = 0, counted = 0;
    for (const BatchEntry& e : all) tokens += static_cast<int64_t>(e.tokens.size());
    for (int r = 0; r < 2; ++r) {
      const auto rows = ranks[r]->last_step_expert_rows();
      ASSERT_EQ(rows.size(), 6u * 8);
      for (int l = 0; l < 6; ++l) {
        for (int e = 0; e < 8; ++e) {
          if (e / 4 != r) {
            EXPECT_EQ(rows[l * 8 + e], 0) << "rank " << r << " expert " << e;
          }
          counted += rows[l * 8 + e];
        }
      }
    }
    EXPECT_EQ(counted, tokens * 2 * 6) << "step " << step;
    // The next decode token: the whole engine's greedy choice, for both.
    const int64_t vocab = (*whole)->config().vocab_size;
    int64_t row = 0;
    for (int s = 0; s < 3; ++s) {
      if (step == 2 && rank_of[s] == 1) continue;
      const int64_t rows = step == 0 ? static_cast<int64_t>(seqs[s].tokens.size()) : 1;
      const float* last = want.data() + (row + rows - 1) * vocab;
      seqs[s].tokens.push_back(static_cast<int32_t>(std::max_element(last, last + vocab) - last));
      row += rows;
    }
  }
}

// The GPU path's bf16 results, on the CPU: close to the fp32 results, not equal (the rounding is
// applied to every result row, the local ones included).
TEST(ExpertParallelTest, Bf16ResultsStayCloseToTheSingleEngine) {
  auto whole = LoadEngine(kModel, Options());
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto exchanges = TcpExpertGroup(2, ExpertResultDtype::kBf16);
  std::vector<std::unique_ptr<Engine>> ranks;
  for (int r = 0; r < 2; ++r) {
    EngineOptions o = Options();
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
  std::printf("bf16 expert results: logits relative L2 %.5f against fp32\n", rel);
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 0.02);
}

TEST(ExpertParallelTest, RefusesWhatIsNotAnExpertParallelGroup) {
  auto exchanges = TcpExpertGroup(2);
  EngineOptions o = Options();
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
