#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1) {
  double max = -std::numeric_limits<double>::infinity();
  for (float x : logits) max = std::max(max, x / temperature);
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] / temperature - max);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) {
    logits.push_back(p > 0 ? static_cast<float>(std::log(p))
                           : -std::numeric_limits<float>::infinity());
  }
  return logits;
}

std::vector<int> Histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size());
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).token];
  return counts;
}

// Pearson chi-square of `counts` against `probs`. Tokens with probability 0 must never be drawn.
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& probs) {
  const double n = std::accumulate(counts.begin(), counts.end(), 0.0);
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double expected = n * probs[i];
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

// Chi-square critical values at p = 0.001: a correct sampler fails with probability 1e-3 for an
// arbitrary seed, and the seeds below are fixed, so the tests are deterministic.
double Critical001(int dof) {
  static const double kTable[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88};
  return kTable[dof];
}

SamplingParams Params(float temperature, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

TEST(SamplingParams, DefaultsAreValid) { EXPECT_TRUE(SamplingParams{}.Validate().ok()); }

TEST(SamplingParams, ErrorsNameTheField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    void (*set)(SamplingParams&);
    const char* message;
  };
  const Case cases[] = {
      {[](SamplingParams& p) { p.temperature = -1; }, "temperature must be in [0, 100], got -1"},
      {[](SamplingParams& p) { p.temperature = 101; }, "temperature must be in [0, 100], got 101"},
      {[](SamplingParams& p) { p.top_k = -1; }, "top_k must be >= 0"},
      {[](SamplingParams& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0"},
      {[](SamplingParams& p) { p.top_p = 1.5; }, "top_p must be in (0, 1], got 1.5"},
      {[](SamplingParams& p) { p.min_p = -0.1f; }, "min_p must be in [0, 1]"},
      {[](SamplingParams& p) { p.repetition_penalty = 0; },
       "repetition_penalty must be in (0, 100]"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5; }, "presence_penalty must be in [-2, 2]"},
      {[](SamplingParams& p) { p.frequency_penalty = -3; }, "frequency_penalty must be in [-2, 2]"},
      {[](SamplingParams& p) { p.top_logprobs = 21; }, "top_logprobs must be in [0, 20], got 21"},
      {[](SamplingParams& p) { p.top_logprobs = -1; }, "top_logprobs must be in [0, 20], got -1"},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.set(p);
    const absl::Status s = p.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
  }
  // NaN fails every range.
  for (float SamplingParams::*field :
       {&SamplingParams::temperature, &SamplingParams::top_p, &SamplingParams::min_p,
        &SamplingParams::repetition_penalty, &SamplingParams::presence_penalty,
        &SamplingParams::frequency_penalty}) {
    SamplingParams p;
    p.*field = nan;
    EXPECT_THAT(p.Validate().message(), HasSubstr("got nan"));
  }
}

TEST(Sampler, GreedyIsFirstArgmax) {
  Sampler sampler(SamplingParams{}, {});
  EXPECT_EQ(sampler.Sample(std::vector<float>{1, 3, 2, 3}).token, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-5, -4, -4.5}).token, 1);
}

TEST(Sampler, GreedyIgnoresTruncationAndSeesPenalties) {
  SamplingParams p;
  p.top_k = 1;
  p.top_p = 0.1f;
  p.repetition_penalty = 2;
  Sampler sampler(p, std::vector<int32_t>{0});
  // Token 0 (4 -> 2 after the penalty) loses to token 1 (3).
  EXPECT_EQ(sampler.Sample(std::vector<float>{4, 3, 1}).token, 1);
}

TEST(Sampler, TemperatureMatchesSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, 3.0f, -1.0f};
  for (float t : {0.7f, 1.0f, 2.5f}) {
    Sampler sampler(Params(t, 7), {});
    const std::vector<int> counts = Histogram(sampler, logits, 20000);
    EXPECT_LT(ChiSquare(counts, Softmax(logits, t)), Critical001(4)) << "temperature " << t;
  }
}

TEST(Sampler, TemperatureLimits) {
  const std::vector<float> logits = {1.0f, 1.1f, 0.9f, 1.05f};
  // Towards 0: all mass on the argmax (exp(-0.05 / 1e-3) is ~2e-22); below 1e-5 it is greedy.
  for (float t : {1e-3f, 1e-6f}) {
    Sampler sampler(Params(t), {});
    const std::vector<int> counts = Histogram(sampler, logits, 2000);
    EXPECT_THAT(counts, ElementsAre(0, 2000, 0, 0)) << "temperature " << t;
  }
  // Large: nearly uniform, still exactly softmax(l / T).
  Sampler hot(Params(100, 3), {});
  EXPECT_LT(ChiSquare(Histogram(hot, logits, 20000), std::vector<double>(4, 0.25)), Critical001(3));
}

TEST(Sampler, TopKKeepsExactlyTheKLargest) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.5f, 3.0f, 1.0f, 0.0f, 2.5f};
  SamplingParams p = Params(1, 11);
  p.top_k = 3;  // ids 4 (3.0), 7 (2.5), 1 (2.0)
  Sampler sampler(p, {});
  const std::vector<int> counts = Histogram(sampler, logits, 20000);
  std::vector<float> kept(logits.size(), -std::numeric_limits<float>::infinity());
  for (int id : {4, 7, 1}) kept[id] = logits[id];
  EXPECT_LT(ChiSquare(counts, Softmax(kept)), Critical001(2));
  for (int id : {4, 7, 1}) EXPECT_GT(counts[id], 0);
}

TEST(Sampler, TopKTiesGoToTheLowerId) {
  SamplingParams p = Params(1, 5);
  p.top_k = 2;
  Sampler sampler(p, {});
  const std::vector<int> counts = Histogram(sampler, {1, 2, 2, 2}, 4000);
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[3], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<double> probs = {0.1, 0.4, 0.2, 0.3};  // sorted: 1 (.4), 3 (.3), 2 (.2), 0 (.1)
  struct Case {
    float top_p;
    std::vector<double> expected;
  };
  const Case cases[] = {
      {0.3f, {0, 1, 0, 0}},               // 0.4 already reaches 0.3
      {0.65f, {0, 4.0 / 7, 0, 3.0 / 7}},  // 0.4 < 0.65 <= 0.7: the crossing token is kept
      {0.75f, {0, 4.0 / 9, 2.0 / 9, 3.0 / 9}},
      {0.95f, probs},
  };
  for (const Case& c : cases) {
    SamplingParams p = Params(1, 13);
    p.top_p = c.top_p;
    Sampler sampler(p, {});
    const std::vector<int> counts = Histogram(sampler, LogitsOf(probs), 20000);
    const int support = static_cast<int>(
        std::count_if(c.expected.begin(), c.expected.end(), [](double x) { return x > 0; }));
    if (support == 1) {
      EXPECT_THAT(counts, ElementsAre(0, 20000, 0, 0));
    } else {
      EXPECT_LT(ChiSquare(counts, c.expected), Critical001(support - 1)) << "top_p " << c.top_p;
    }
  }
}

// Hundreds of close logits: with a spread of 0.01 they share the top-p boundary bucket, so the
// nucleus is ranked over several chunks; with 0.3 some lie in buckets wholly inside the nucleus.
// The reference ranks everything with a full sort.
TEST(Sampler, TopPMatchesAFullSort) {
  for (float spread : {0.01f, 0.3f}) {
    const int vocab = 2048;
    std::mt19937 gen(123);
    std::normal_distribution<float> noise(0, 1);
    std::vector<float> logits(vocab);
    for (float& x : logits) x = -4 + noise(gen);
    for (int i = 0; i < 400; ++i) logits[(i * 797) % vocab] = 4 + spread * noise(gen);

    const float top_p = 0.5f;
    std::vector<double> probs = Softmax(logits);
    std::vector<int> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    std::set<int> nucleus;
    double cum = 0;
    for (int id : order) {
      nucleus.insert(id);
      cum += probs[id];
      if (cum >= top_p) break;
    }
    ASSERT_GT(nucleus.size(), 150u) << spread;  // more than two chunks of 64
    ASSERT_LT(nucleus.size(), 400u) << spread;

    SamplingParams p = Params(1, 17);
    p.top_p = top_p;
    Sampler sampler(p, {});
    std::set<int> seen;
    for (int i = 0; i < 60000; ++i) seen.insert(sampler.Sample(logits).token);
    EXPECT_EQ(seen, nucleus) << "spread " << spread;  // all of the nucleus, nothing outside it
  }
}

// Large k takes the radix-select path instead of the heap.
TEST(Sampler, LargeTopKMatchesAFullSort) {
  const int vocab = 4096;
  std::vector<int> rank(vocab);
  std::iota(rank.begin(), rank.end(), 0);
  std::shuffle(rank.begin(), rank.end(), std::mt19937(3));
  std::vector<float> logits(vocab);
  for (int id = 0; id < vocab; ++id) logits[id] = -0.001f * static_cast<float>(rank[id]);
  std::set<int> top;
  for (int id = 0; id < vocab; ++id) {
    if (rank[id] < 1200) top.insert(id);
  }
  SamplingParams p = Params(100, 47);  // nearly flat over the 1200
  p.top_k = 1200;                      // above kHeapTopK (1024)
  Sampler sampler(p, {});
  std::set<int> seen;
  for (int i = 0; i < 30000; ++i) seen.insert(sampler.Sample(logits).token);
  EXPECT_EQ(seen, top);
}

TEST(Sampler, TopKOnFullVocabulary) {
  std::vector<float> logits(128256);
  std::mt19937 gen(41);
  std::normal_distribution<float> noise(0, 2);
  for (float& x : logits) x = noise(gen);
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 40, order.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  const std::set<int> top(order.begin(), order.begin() + 40);

  SamplingParams p = Params(3, 43);  // hot, so that all 40 are drawn
  p.top_k = 40;
  Sampler sampler(p, {});
  std::set<int> seen;
  for (int i = 0; i < 1500; ++i) seen.insert(sampler.Sample(logits).token);
  EXPECT_EQ(seen, top);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfTheMax) {
  const std::vector<double> probs = {0.06, 0.5, 0.1, 0.3, 0.04};
  SamplingParams p = Params(1, 19);
  p.min_p = 0.15f;  // threshold 0.075: keeps 0.5, 0.3, 0.1
  Sampler sampler(p, {});
  const std::vector<int> counts = Histogram(sampler, LogitsOf(probs), 20000);
  EXPECT_LT(ChiSquare(counts, {0, 5.0 / 9, 1.0 / 9, 3.0 / 9, 0}), Critical001(2));
}

// top-k renormalizes before top-p: with k = 3 the probabilities .3 .25 .2 become .4 .33 .27, so
// top_p = 0.7 keeps two tokens; top-p on the full distribution would have kept three.
TEST(Sampler, TopKThenTopPThenMinP) {
  const std::vector<double> probs = {0.3, 0.25, 0.2, 0.15, 0.1};
  SamplingParams p = Params(1, 23);
  p.top_k = 3;
  p.top_p = 0.7f;
  Sampler sampler(p, {});
  const std::vector<int> counts = Histogram(sampler, LogitsOf(probs), 20000);
  EXPECT_LT(ChiSquare(counts, {0.3 / 0.55, 0.25 / 0.55, 0, 0, 0}), Critical001(1));

  p.min_p = 0.9f;  // 0.25 / 0.3 < 0.9: only the top token is left
  Sampler strict(p, {});
  EXPECT_THAT(Histogram(strict, LogitsOf(probs), 1000), ElementsAre(1000, 0, 0, 0, 0));
}

TEST(Sampler, PenaltiesChangeExactlyTheIntendedLogits) {
  SamplingParams p;
  p.repetition_penalty = 2;
  p.frequency_penalty = 0.25f;
  p.presence_penalty = 0.5f;
  const std::vector<int32_t> prompt = {1, 2, 1, 999999};  // an id outside the vocabulary is ignored
  Sampler sampler(p, prompt);
  sampler.Accept(2);
  sampler.Accept(3);
  sampler.Accept(3);
  sampler.Accept(4);
  std::vector<float> logits = {1, 4, -3, 6, -2, 5};
  sampler.ApplyPenalties(logits);
  EXPECT_THAT(logits, ElementsAre(1,                       // untouched
                                  2,                       // prompt only: repetition
                                  -3 * 2 - 0.25f - 0.5f,   // prompt + once: all three
                                  6 / 2.0f - 0.5f - 0.5f,  // generated twice
                                  -2 * 2 - 0.25f - 0.5f,   // generated once, negative
                                  5));                     // untouched
}

TEST(Sampler, PenaltiesSteerSampling) {
  // Frequency penalty over generated tokens only, seen through the sampled distribution.
  SamplingParams p = Params(1, 29);
  p.frequency_penalty = 1;
  Sampler sampler(p, std::vector<int32_t>{0, 0, 0});  // the prompt does not count for frequency
  sampler.Accept(1);
  sampler.Accept(1);  // logit of 1 drops by 2
  const std::vector<float> logits = {0, 0, 0};
  EXPECT_LT(ChiSquare(Histogram(sampler, logits, 20000), Softmax({0, -2, 0})), Critical001(2));
}

std::vector<int32_t> Draw(Sampler& sampler, int n) {
  std::vector<float> logits(1000);
  for (int i = 0; i < 1000; ++i) logits[i] = std::sin(i * 0.37f);
  std::vector<int32_t> tokens;
  for (int i = 0; i < n; ++i) {
    tokens.push_back(sampler.Sample(logits).token);
    sampler.Accept(tokens.back());
  }
  return tokens;
}

TEST(Sampler, SeedReproduces) {
  SamplingParams p = Params(0.8f, 42);
  p.top_k = 500;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.1f;
  Sampler a(p, {}), b(p, {});
  const std::vector<int32_t> first = Draw(a, 200);
  EXPECT_EQ(first, Draw(b, 200));
  p.seed = 43;
  Sampler c(p, {});
  EXPECT_NE(first, Draw(c, 200));

  // Without a seed, the one drawn is reported and reproduces the sequence.
  p.seed.reset();
  Sampler random(p, {});
  const std::vector<int32_t> tokens = Draw(random, 200);
  p.seed = random.seed();
  Sampler replay(p, {});
  EXPECT_EQ(tokens, Draw(replay, 200));
}

// The RNG and the uniform conversion are fixed by this code, not by the standard library: these
// tokens must come out the same on every machine. Change them only when changing the sampler.
TEST(Sampler, SeedGivesTheSameTokensEverywhere) {
  Sampler sampler(Params(1, 2024), {});
  const std::vector<float> flat(1000, 0.0f);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 8; ++i) tokens.push_back(sampler.Sample(flat).token);
  // floor(1000 * u_i) with u_i = splitmix64(2024 + (i + 1) * 0x9e3779b97f4a7c15) >> 11 * 2^-53,
  // computed independently in Python.
  EXPECT_THAT(tokens, ElementsAre(622, 97, 298, 116, 830, 552, 136, 596));
}

TEST(Sampler, DrawIndexAloneFixesTheDraw) {
  // A sampler rebuilt mid-sequence (stateless worker, recompute after preemption) continues
  // exactly: SampleFor with draw index i gives what the i-th Sample of one sampler gave.
  const SamplingParams p = Params(1, 99);
  Sampler one(p, {});
  const std::vector<float> flat(1000, 0.0f);
  Sampler fresh(Params(0, 1), {});
  for (int i = 0; i < 6; ++i) {
    const int32_t token = one.Sample(flat).token;
    EXPECT_EQ(fresh.SampleFor({&p, 99, i, {}, {}}, flat).token, token) << i;
  }
}

TEST(Sampler, LogprobsAreLogSoftmaxOfRawLogits) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, -3.0f};
  SamplingParams p = Params(0.5f, 31);
  p.top_logprobs = 3;
  p.repetition_penalty = 3;  // neither penalties nor temperature change the reported logprobs
  Sampler sampler(p, std::vector<int32_t>{1});
  const std::vector<double> probs = Softmax(logits);
  double total = 0;
  for (double x : probs) total += x;
  ASSERT_NEAR(total, 1, 1e-12);
  for (int i = 0; i < 50; ++i) {
    const SampleResult r = sampler.Sample(logits);
    EXPECT_NEAR(r.logprob, std::log(probs[r.token]), 1e-6);
    ASSERT_EQ(r.top_logprobs.size(), 3u);
    EXPECT_EQ(r.top_logprobs[0].token, 1);  // tie with 3: lower id first
    EXPECT_EQ(r.top_logprobs[1].token, 3);
    EXPECT_EQ(r.top_logprobs[2].token, 4);
    for (const TokenLogprob& t : r.top_logprobs) {
      EXPECT_NEAR(t.logprob, std::log(probs[t.token]), 1e-6);
    }
  }
}

TEST(Sampler, TopLogprobsOnLargeVocabulary) {
  std::vector<float> logits(128256);
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> u(-10, 10);
  for (float& x : logits) x = u(gen);
  SamplingParams p;
  p.top_logprobs = 20;
  Sampler sampler(p, {});
  const SampleResult r = sampler.Sample(logits);
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 20, order.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  ASSERT_EQ(r.top_logprobs.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(r.top_logprobs[i].token, order[i]);
  EXPECT_EQ(r.token, order[0]);
  EXPECT_FLOAT_EQ(r.logprob, r.top_logprobs[0].logprob);
}

TEST(Sampler, MaskedLogitsAreNeverSampled) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Sampler sampler(Params(1, 37), {});
  const std::vector<int> counts = Histogram(sampler, {-inf, 0, nan, 0, -inf}, 4000);
  EXPECT_EQ(counts[0] + counts[2] + counts[4], 0);
  EXPECT_GT(counts[1], 1800);
  EXPECT_GT(counts[3], 1800);
}

}  // namespace
}  // namespace bitserve
