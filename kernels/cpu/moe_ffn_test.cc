// MoeFeedForward (the MoE block's CPU reference) against a naive per-token reference written from
// docs/formats.md.
#include "kernels/cpu/moe_ffn.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "base/bf16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/act_quant.h"

namespace bitserve {
namespace {

using cpu::MoeFeedForward;
using cpu::RouteTopK;

// The config fields the MoE block reads (ModelConfig's names; kernels/ knows no ModelConfig).
struct ModelConfig {
  int64_t hidden_size = 0;
  int num_experts = 0, num_experts_per_tok = 0, moe_intermediate_size = 0;
  int shared_expert_intermediate_size = 0;
  bool norm_topk_prob = false;
  double rms_norm_eps = 1e-5;
};

MoeShape ShapeOf(const ModelConfig& c) {
  return {c.hidden_size, c.num_experts, c.num_experts_per_tok, c.norm_topk_prob,
          static_cast<float>(c.rms_norm_eps)};
}

TernaryMatrix RandomTernary(std::mt19937& rng, int64_t rows, int64_t cols) {
  TernaryMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.values.resize(rows * cols);
  std::uniform_int_distribution<int> d(-1, 1);
  for (int8_t& v : m.values) v = static_cast<int8_t>(d(rng));
  m.scale = {std::uniform_real_distribution<float>(0.02f, 0.1f)(rng), false};
  return m;
}

FfnWeights RandomFfn(std::mt19937& rng, int64_t hidden, int64_t inter) {
  FfnWeights f;
  f.gate = RandomTernary(rng, inter, hidden);
  f.up = RandomTernary(rng, inter, hidden);
  f.down = RandomTernary(rng, hidden, inter);
  std::normal_distribution<float> d(1.0f, 0.2f);
  for (int64_t i = 0; i < inter; ++i) f.sub_norm.push_back(d(rng));
  return f;
}

std::vector<uint16_t> RandomBf16(std::mt19937& rng, int64_t n, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = FloatToBf16(d(rng));
  return v;
}

// --- the naive reference: one token at a time, straight from the formulas ---
std::vector<float> ActQuantNaive(const std::vector<float>& x) {  // returns q / s
  float mx = 0;
  for (float v : x) mx = std::max(mx, std::fabs(v));
  const float s = (1.0f / std::max(mx, 1e-5f)) * 127.0f;
  std::vector<float> out;
  for (float v : x) out.push_back(std::clamp(std::nearbyint(v * s), -128.0f, 127.0f) / s);
  return out;
}

std::vector<float> MatVec(const TernaryMatrix& m, const std::vector<float>& x) {
  std::vector<float> y(m.rows);
  for (int64_t o = 0; o < m.rows; ++o) {
    double acc = 0;
    for (int64_t i = 0; i < m.cols; ++i) acc += m.values[o * m.cols + i] * double{x[i]};
    y[o] = static_cast<float>(acc * m.scale.multiplier());
  }
  return y;
}

std::vector<float> FfnNaive(const FfnWeights& f, const std::vector<float>& n, float eps) {
  const std::vector<float> nq = ActQuantNaive(n);
  std::vector<float> g = MatVec(f.gate, nq), u = MatVec(f.up, nq);
  double ss = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = std::max(g[i], 0.0f) * std::max(g[i], 0.0f) * u[i];
    ss += double{g[i]} * g[i];
  }
  const float r = static_cast<float>(1.0 / std::sqrt(ss / g.size() + eps));
  for (size_t i = 0; i < g.size(); ++i) g[i] = f.sub_norm[i] * (g[i] * r);
  return MatVec(f.down, ActQuantNaive(g));
}

std::vector<float> MoeNaive(const MoeWeights& w, const ModelConfig& c,
                            const std::vector<float>& n) {
  const int64_t h = c.hidden_size;
  std::vector<double> p(c.num_experts);
  double total = 0;
  for (int e = 0; e < c.num_experts; ++e) {
    double dot = 0;
    for (int64_t i = 0; i < h; ++i) dot += double{Bf16ToFloat(w.router[e * h + i])} * n[i];
    total += (p[e] = std::exp(dot));
  }
  std::vector<int> order(c.num_experts);
  for (int e = 0; e < c.num_experts; ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  double top = 0;
  for (int j = 0; j < c.num_experts_per_tok; ++j) top += p[order[j]] / total;
  std::vector<float> out(h, 0.0f);
  for (int j = 0; j < c.num_experts_per_tok; ++j) {
    const double wj = c.norm_topk_prob ? p[order[j]] / total / top : p[order[j]] / total;
    const std::vector<float> y =
        FfnNaive(w.experts[order[j]], n, static_cast<float>(c.rms_norm_eps));
    for (int64_t i = 0; i < h; ++i) out[i] += static_cast<float>(wj * y[i]);
  }
  if (w.has_shared()) {
    double dot = 0;
    for (int64_t i = 0; i < h; ++i) dot += double{Bf16ToFloat(w.shared_gate[i])} * n[i];
    const double g = 1.0 / (1.0 + std::exp(-dot));
    const std::vector<float> y = FfnNaive(w.shared, n, static_cast<float>(c.rms_norm_eps));
    for (int64_t i = 0; i < h; ++i) out[i] += static_cast<float>(g * y[i]);
  }
  return out;
}

struct Case {
  int experts, top_k, inter, shared;
  bool norm;
};

class MoeFfnTest : public ::testing::TestWithParam<Case> {};

TEST_P(MoeFfnTest, MatchesNaiveReference) {
  const Case k = GetParam();
  const uint32_t seed = 1000 + k.experts * 10 + k.top_k + k.shared;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  ModelConfig c;
  c.hidden_size = 64;
  c.num_experts = k.experts;
  c.num_experts_per_tok = k.top_k;
  c.moe_intermediate_size = k.inter;
  c.shared_expert_intermediate_size = k.shared;
  c.norm_topk_prob = k.norm;
  c.rms_norm_eps = 1e-5;
  MoeWeights w;
  w.router = RandomBf16(rng, int64_t{k.experts} * c.hidden_size, 0.3f);
  for (int e = 0; e < k.experts; ++e) w.experts.push_back(RandomFfn(rng, c.hidden_size, k.inter));
  if (k.shared > 0) {
    w.shared = RandomFfn(rng, c.hidden_size, k.shared);
    w.shared_gate = RandomBf16(rng, c.hidden_size, 0.2f);
  }
  const int64_t m = 37;
  std::vector<float> n(m * c.hidden_size);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& v : n) v = d(rng);
  std::vector<float> out(m * c.hidden_size, std::nanf(""));  // poisoned
  MoeScratch scratch;
  MoeFeedForward(w, ShapeOf(c), n.data(), m, out.data(), &scratch);

  double err = 0, ref_norm = 0;
  for (int64_t r = 0; r < m; ++r) {
    const std::vector<float> row(n.begin() + r * c.hidden_size,
                                 n.begin() + (r + 1) * c.hidden_size);
    const std::vector<float> ref = MoeNaive(w, c, row);
    for (int64_t i = 0; i < c.hidden_size; ++i) {
      const float got = out[r * c.hidden_size + i];
      ASSERT_TRUE(std::isfinite(got)) << "row " << r << " element " << i;
      err += (got - ref[i]) * double{got - ref[i]};
      ref_norm += double{ref[i]} * ref[i];
    }
  }
  // float32 vs double accumulation; an int8 rounding tie decided differently would show as ~1e-3.
  EXPECT_LT(std::sqrt(err / ref_norm), 1e-5);
  // Reusing the scratch gives the same result.
  std::vector<float> again(out.size());
  MoeFeedForward(w, ShapeOf(c), n.data(), m, again.data(), &scratch);
  EXPECT_EQ(again, out);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeFfnTest,
                         ::testing::Values(Case{4, 2, 32, 0, true}, Case{8, 2, 48, 0, true},
                                           Case{8, 3, 16, 0, false}, Case{4, 1, 32, 24, true},
                                           Case{6, 6, 8, 16, false}));

// Expert parallelism's split of the block (runtime/engine/cpu_expert_parallel.cc): the tokens
// routed on one side, each owner holding only its experts and running the rows sent to it in any
// order, the combine back at the origin: equal to MoeFeedForward bit for bit (shared expert too).
TEST(MoePieces, ExpertsSplitOverOwnersEqualMoeFeedForwardBitForBit) {
  std::mt19937 rng(4242);
  ModelConfig c;
  c.hidden_size = 64;
  c.num_experts = 6;
  c.num_experts_per_tok = 2;
  c.norm_topk_prob = true;
  const MoeShape shape = ShapeOf(c);
  MoeWeights whole;
  whole.router = RandomBf16(rng, int64_t{c.num_experts} * c.hidden_size, 0.3f);
  for (int e = 0; e < c.num_experts; ++e) whole.experts.push_back(RandomFfn(rng, 64, 24));
  whole.shared = RandomFfn(rng, 64, 16);
  whole.shared_gate = RandomBf16(rng, 64, 0.2f);
  const int owners = 3;  // owner of expert e: e / 2
  std::vector<MoeWeights> parts(owners, whole);
  for (int e = 0; e < c.num_experts; ++e) {
    for (int o = 0; o < owners; ++o) {
      if (o != e / 2) parts[o].experts[e] = FfnWeights();
    }
  }
  EXPECT_FALSE(parts[0].holds(2));
  EXPECT_TRUE(parts[1].holds(2));
  const int64_t m = 29, h = 64, k = 2;
  std::vector<float> n(m * h);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& v : n) v = d(rng);
  std::vector<float> want(m * h);
  MoeFeedForward(whole, shape, n.data(), m, want.data());

  MoeScratch s;
  cpu::RouteTokens(whole, shape, n.data(), m, s);
  const std::vector<int32_t> experts(s.experts.begin(), s.experts.begin() + m * k);
  const std::vector<float> weights(s.weights.begin(), s.weights.begin() + m * k);
  std::vector<int8_t> nq(m * h);
  std::vector<float> scales(m);
  cpu::ActQuantPerToken(n.data(), m, h, nq.data(), scales.data());
  std::vector<float> expert_out(m * k * h, std::nanf(""));
  for (int o = 0; o < owners; ++o) {
    // The owner's rows, newest slot first: the order rows arrive in must not matter.
    std::vector<int64_t> slots;
    for (int64_t i = m * k - 1; i >= 0; --i) {
      if (experts[i] / 2 == o) slots.push_back(i);
    }
    std::vector<int8_t> xq;
    std::vector<float> xs;
    std::vector<int32_t> ids;
    for (int64_t i : slots) {
      xq.insert(xq.end(), nq.begin() + (i / k) * h, nq.begin() + (i / k + 1) * h);
      xs.push_back(scales[i / k]);
      ids.push_back(experts[i]);
    }
    std::vector<float> y(slots.size() * h);
    MoeScratch owner_scratch;
    cpu::RunExperts(parts[o], shape, xq.data(), xs.data(), ids.data(),
                    static_cast<int64_t>(slots.size()), y.data(), owner_scratch);
    for (size_t j = 0; j < slots.size(); ++j) {
      std::copy_n(y.data() + j * h, h, expert_out.data() + slots[j] * h);
    }
  }
  std::vector<float> got(m * h, std::nanf(""));
  cpu::CombineExperts(weights.data(), expert_out.data(), m, k, h, got.data());
  cpu::AddSharedExpert(whole, shape, n.data(), nq.data(), scales.data(), m, got.data(), s);
  for (int64_t i = 0; i < m * h; ++i) ASSERT_EQ(got[i], want[i]) << "element " << i;
}

TEST(RouteTopK, NormalizesAndBreaksTiesByIndex) {
  const float logits[] = {1.0f, 3.0f, 3.0f, 0.0f, /* row 2 */ 0.5f, 0.5f, 0.5f, 0.5f};
  int32_t experts[4];
  float weights[4];
  RouteTopK(logits, 2, 4, 2, true, experts, weights);
  EXPECT_EQ(experts[0], 1);
  EXPECT_EQ(experts[1], 2);
  EXPECT_FLOAT_EQ(weights[0], 0.5f);
  EXPECT_FLOAT_EQ(weights[0] + weights[1], 1.0f);
  EXPECT_EQ(experts[2], 0);
  EXPECT_EQ(experts[3], 1);
  RouteTopK(logits, 2, 4, 2, false, experts, weights);
  EXPECT_NEAR(weights[2], 0.25f, 1e-7);
}

}  // namespace
}  // namespace bitserve
