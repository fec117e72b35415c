#include "runtime/generation/perplexity.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::HasSubstr;

TEST(StridedWindows, CoverEveryTokenOnceWithOverlap) {
  auto w = StridedWindows(10, 4, 2);
  ASSERT_TRUE(w.ok());
  // [0,4) scores 1..3; [2,6) scores 4..5; [4,8) scores 6..7; [6,10) scores 8..9.
  ASSERT_EQ(w->size(), 4u);
  EXPECT_EQ((*w)[0].begin, 0);
  EXPECT_EQ((*w)[0].first_scored, 1);
  EXPECT_EQ((*w)[1].begin, 2);
  EXPECT_EQ((*w)[1].first_scored, 4);
  EXPECT_EQ((*w)[3].end, 10);
  int64_t scored = 0;
  for (const PerplexityWindow& x : *w) scored += x.end - x.first_scored;
  EXPECT_EQ(scored, 9);
}

TEST(StridedWindows, NonOverlappingSkipsEachWindowsFirstToken) {
  auto w = StridedWindows(9, 4, 4);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->size(), 3u);
  EXPECT_EQ((*w)[1].first_scored, 5);
  EXPECT_EQ((*w)[2].begin, 8);
  EXPECT_EQ((*w)[2].first_scored, 9);  // [8, 9) scores nothing
}

TEST(StridedWindows, ShortTextIsOneWindow) {
  auto w = StridedWindows(3, 256, 128);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->size(), 1u);
  EXPECT_EQ((*w)[0].end, 3);
}

TEST(StridedWindows, BadArguments) {
  EXPECT_THAT(StridedWindows(10, 4, 5).status().message(), HasSubstr("stride"));
  EXPECT_THAT(StridedWindows(10, 4, 0).status().message(), HasSubstr("stride"));
  EXPECT_THAT(StridedWindows(1, 4, 2).status().message(), HasSubstr("at least 2 tokens"));
}

// An engine whose logits at a row favour token (previous token + 1) by `bonus` nats.
class CountingEngine : public Engine {
 public:
  explicit CountingEngine(int vocab) { config_.vocab_size = vocab; }
  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return 4; }
  int num_kv_blocks() const override { return 4; }
  int64_t max_model_len() const override { return 16; }
  int max_batch_tokens() const override { return 16; }
  std::string device_name() const override { return "fake"; }
  KvDtype kv_dtype() const override { return KvDtype::kF32; }
  absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) override {
    logits->clear();
    for (const BatchEntry& e : entries) {
      EXPECT_EQ(e.start_position, 0);
      EXPECT_EQ(e.logits, LogitsWanted::kAll);
      windows.push_back(e.tokens.size());
      for (int32_t t : e.tokens) {
        std::vector<float> row(config_.vocab_size, 0.0f);
        row[(t + 1) % config_.vocab_size] = bonus;
        logits->insert(logits->end(), row.begin(), row.end());
      }
    }
    return absl::OkStatus();
  }
  absl::Status Step(std::span<const BatchEntry>, std::span<const SampleSpec>,
                    std::vector<SampleResult>*) override {
    return absl::UnimplementedError("fake");
  }
  std::vector<size_t> windows;
  float bonus = 2.0f;

 private:
  ModelConfig config_;
};

TEST(ComputePerplexity, ExactOnAKnownDistribution) {
  CountingEngine engine(8);
  // Tokens 0,1,2,... follow the favoured successor: each scored token has p = e^2 / (e^2 + 7).
  std::vector<int32_t> ids(20);
  for (int i = 0; i < 20; ++i) ids[i] = i % 8;
  auto r = ComputePerplexity(engine, ids, 8, 4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, 19);
  const double nll = -std::log(std::exp(2.0) / (std::exp(2.0) + 7.0));
  EXPECT_NEAR(r->nll, nll, 1e-6);
  EXPECT_NEAR(r->ppl, std::exp(nll), 1e-5);
  EXPECT_EQ(engine.windows, (std::vector<size_t>{8, 8, 8, 8}));  // [0,8) [4,12) [8,16) [12,20)
}

TEST(ComputePerplexity, ContextBeyondTheEngineIsRefused) {
  CountingEngine engine(8);
  std::vector<int32_t> ids(40, 1);
  EXPECT_THAT(ComputePerplexity(engine, ids, 32, 16).status().message(),
              HasSubstr("max_model_len"));
}

}  // namespace
}  // namespace bitserve
