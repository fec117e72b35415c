// The CPU reference ops against straightforward float64 formulas, on random inputs.
#include <cmath>
#include <random>
#include <vector>

#include "base/bf16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitserve::cpu {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double RelErr(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST(Bf16, RoundsToNearestEvenAndKeepsNan) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa (1.0).
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even).
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
}

TEST(ActQuant, RoundsHalfToEvenAndScalesByRowMax) {
  // max |x| = 127 gives s = 1, so q = round_half_even(x).
  std::vector<float> x = {127.0f, 2.5f, -2.5f, 3.5f, 0.49f, -127.0f, 1.5f, -0.5f};
  std::vector<int8_t> q(x.size());
  float s;
  ActQuantPerToken(x.data(), 1, x.size(), q.data(), &s);
  EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(q, (std::vector<int8_t>{127, 2, -2, 4, 0, -127, 2, 0}));
}

TEST(ActQuant, ZeroRowUsesTheFloorScale) {
  std::vector<float> x(16, 0.0f);
  std::vector<int8_t> q(16, 1);
  float s;
  ActQuantPerToken(x.data(), 1, 16, q.data(), &s);
  EXPECT_EQ(s, (1.0f / 1e-5f) * 127.0f);
  for (int8_t v : q) EXPECT_EQ(v, 0);
}

TEST(ActQuant, MatchesFormulaOnRandomRows) {
  std::mt19937 rng(1);
  const int rows = 7, dim = 300;
  auto x = Random(rows * dim, rng, 3.0f);
  std::vector<int8_t> q(rows * dim);
  std::vector<float> s(rows);
  ActQuantPerToken(x.data(), rows, dim, q.data(), s.data());
  for (int r = 0; r < rows; ++r) {
    float m = 0;
    for (int i = 0; i < dim; ++i) m = std::max(m, std::fabs(x[r * dim + i]));
    EXPECT_EQ(s[r], (1.0f / m) * 127.0f);  // torch's 127 / t is t.reciprocal() * 127
    for (int i = 0; i < dim; ++i) {
      EXPECT_LE(std::fabs(q[r * dim + i] - x[r * dim + i] * s[r]), 0.5f);
    }
  }
}

TEST(TernaryMatmul, ExactIntegerSumsAndScales) {
  std::mt19937 rng(2);
  const int m = 5, out = 37, in = 203;
  std::uniform_int_distribution<int> w3(-1, 1), a8(-128, 127);
  std::vector<int8_t> w(out * in), xq(m * in);
  for (auto& v : w) v = static_cast<int8_t>(w3(rng));
  for (auto& v : xq) v = static_cast<int8_t>(a8(rng));
  std::vector<float> scale = {1.0f, 2.0f, 0.5f, 10.0f, 127.0f};
  std::vector<int32_t> acc(m * out);
  std::vector<float> y(m * out);
  TernaryMatmulInt32(xq.data(), m, w.data(), out, in, acc.data());
  std::vector<float> yd(m * out);
  TernaryMatmul(xq.data(), scale.data(), m, w.data(), out, in, {0.25f, false}, y.data());
  TernaryMatmul(xq.data(), scale.data(), m, w.data(), out, in, {3.0f, true}, yd.data());
  for (int t = 0; t < m; ++t) {
    for (int o = 0; o < out; ++o) {
      int64_t want = 0;
      for (int i = 0; i < in; ++i) want += int64_t{xq[t * in + i]} * w[o * in + i];
      ASSERT_EQ(acc[t * out + o], want);
      EXPECT_EQ(y[t * out + o], static_cast<float>(want) / scale[t] * 0.25f);
      EXPECT_EQ(yd[t * out + o], static_cast<float>(want) / (scale[t] * 3.0f));
    }
  }
}

TEST(RmsNorm, MatchesFloat64) {
  std::mt19937 rng(3);
  const int rows = 4, dim = 257;
  auto x = Random(rows * dim, rng, 5.0f);
  auto w = Random(dim, rng);
  std::vector<float> y(rows * dim);
  RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, y.data());
  std::vector<double> want(rows * dim);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double{x[r * dim + i]} * x[r * dim + i];
    double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) want[r * dim + i] = w[i] * x[r * dim + i] * inv;
  }
  EXPECT_LT(RelErr(y, want), 1e-6);
}

TEST(Rope, MatchesFloat64RotationAndPreservesNorm) {
  std::mt19937 rng(4);
  const int tokens = 3, heads = 2, dim = 16;
  auto x = Random(tokens * heads * dim, rng);
  auto y = x;
  std::vector<int32_t> pos = {0, 7, 1000};
  auto inv = RopeInverseFrequencies(dim, 10000.0);
  RopeNeox(y.data(), tokens, heads, dim, pos.data(), inv.data());
  std::vector<double> want(x.size());
  for (int t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      const float* v = &x[(t * heads + h) * dim];
      for (int i = 0; i < dim / 2; ++i) {
        double f = pos[t] / std::pow(10000.0, 2.0 * i / dim);
        want[(t * heads + h) * dim + i] = v[i] * std::cos(f) - v[i + dim / 2] * std::sin(f);
        want[(t * heads + h) * dim + i + dim / 2] =
            v[i + dim / 2] * std::cos(f) + v[i] * std::sin(f);
      }
    }
  }
  // float32 angles at position 1000 carry ~1e-4 absolute phase error, as torch's do.
  EXPECT_LT(RelErr(y, want), 2e-4);
  for (int i = 0; i < heads * dim; ++i) EXPECT_EQ(y[i], x[i]);  // position 0 is the identity
}

TEST(Attention, MatchesFloat64SoftmaxWithCausalGqa) {
  std::mt19937 rng(5);
  const int heads = 4, kv_heads = 2, dim = 8, start = 3, tokens = 4, total = start + tokens;
  auto q = Random(tokens * heads * dim, rng);
  auto k = Random(total * kv_heads * dim, rng);
  auto v = Random(total * kv_heads * dim, rng);
  std::vector<float> out(tokens * heads * dim, NAN);
  AttentionShape shape{heads, kv_heads, dim, 1.0f / std::sqrt(8.0f)};
  AttentionCausal(q.data(), tokens, start, k.data(), v.data(), kv_heads * dim, shape, out.data());
  std::vector<double> want(out.size());
  for (int t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      const int kvh = h / 2, keys = start + t + 1;
      std::vector<double> p(keys);
      double mx = -1e300, sum = 0;
      for (int j = 0; j < keys; ++j) {
        double d = 0;
        for (int i = 0; i < dim; ++i)
          d += double{q[(t * heads + h) * dim + i]} * k[(j * kv_heads + kvh) * dim + i];
        p[j] = d / std::sqrt(8.0);
        mx = std::max(mx, p[j]);
      }
      for (double& e : p) sum += (e = std::exp(e - mx));
      for (int i = 0; i < dim; ++i) {
        double o = 0;
        for (int j = 0; j < keys; ++j) o += p[j] / sum * v[(j * kv_heads + kvh) * dim + i];
        want[(t * heads + h) * dim + i] = o;
      }
    }
  }
  EXPECT_LT(RelErr(out, want), 1e-6);
}

TEST(Elementwise, Relu2MulAndAdd) {
  std::vector<float> g = {-1.0f, 0.0f, 2.0f, 3.0f}, u = {5.0f, 5.0f, 0.5f, -1.0f}, y(4);
  Relu2Mul(g.data(), u.data(), 4, y.data());
  EXPECT_EQ(y, (std::vector<float>{0.0f, 0.0f, 2.0f, -9.0f}));
  AddInPlace(y.data(), u.data(), 4);
  EXPECT_EQ(y, (std::vector<float>{5.0f, 5.0f, 2.5f, -10.0f}));
}

TEST(Bf16Matmul, MatchesFloat64AndGathers) {
  std::mt19937 rng(6);
  const int m = 3, n = 301, k = 67;
  auto x = Random(m * k, rng);
  std::vector<uint16_t> w(n * k);
  auto wf = Random(n * k, rng);
  for (int i = 0; i < n * k; ++i) w[i] = FloatToBf16(wf[i]);
  std::vector<float> y(m * n);
  Bf16Matmul(x.data(), m, w.data(), n, k, y.data());
  std::vector<double> want(m * n);
  for (int t = 0; t < m; ++t)
    for (int j = 0; j < n; ++j) {
      double d = 0;
      for (int i = 0; i < k; ++i) d += double{x[t * k + i]} * Bf16ToFloat(w[j * k + i]);
      want[t * n + j] = d;
    }
  EXPECT_LT(RelErr(y, want), 1e-6);
  std::vector<int32_t> ids = {5, 0, 300};
  std::vector<float> rows(3 * k);
  Bf16GatherRows(w.data(), k, ids.data(), 3, rows.data());
  for (int i = 0; i < k; ++i) EXPECT_EQ(rows[2 * k + i], Bf16ToFloat(w[300 * k + i]));
}

// The int8 LM head's weights: the row's largest magnitude maps to +-127, every value within half
// a step of its dequantization, a zero row gets scale 1, padding columns zero.
TEST(QuantizeBf16RowsInt8, RowScalesAndHalfStepError) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t rows = 5, cols = 37, stride = 48;
  std::vector<uint16_t> w(rows * cols);
  for (uint16_t& x : w) x = FloatToBf16(normal(rng));
  for (int64_t i = 0; i < cols; ++i) w[3 * cols + i] = 0;  // a zero row
  w[1 * cols + 4] = FloatToBf16(-0.75f);                   // row 1's largest magnitude, negative
  std::vector<int8_t> q(rows * stride, 99);
  std::vector<float> d(rows);
  cpu::QuantizeBf16RowsInt8(w.data(), rows, cols, q.data(), stride, d.data());
  EXPECT_EQ(d[3], 1.0f);
  EXPECT_EQ(d[1], 0.75f / 127.0f);
  EXPECT_EQ(q[1 * stride + 4], -127);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) {
      const float v = Bf16ToFloat(w[r * cols + i]);
      EXPECT_LE(std::fabs(q[r * stride + i] * d[r] - v), 0.5f * d[r] * (1 + 1e-6f))
          << r << " " << i;
      EXPECT_LE(std::abs(q[r * stride + i]), 127);
    }
    for (int64_t i = cols; i < stride; ++i) EXPECT_EQ(q[r * stride + i], 0);
  }
}

TEST(Int8MatmulRowScales, ExactSumsTimesBothScales) {
  const int8_t x[] = {1, -2, 3, 127, -128, 0};  // 2 rows of 3
  const float xs[] = {2.0f, 0.5f};
  const int8_t w[] = {1, 1, 1, -1, 0, 2, 127, 127, 127, 0, 0, 0};  // 4 rows of 3
  const float ws[] = {0.25f, 1.0f, 3.0f, 7.0f};
  float y[8];
  cpu::Int8MatmulRowScales(x, xs, 2, w, 4, 3, ws, y);
  const int32_t acc[2][4] = {{2, 5, 254, 0}, {-1, -127, -127, 0}};
  for (int t = 0; t < 2; ++t) {
    for (int o = 0; o < 4; ++o) {
      EXPECT_EQ(y[t * 4 + o], static_cast<float>(acc[t][o]) / xs[t] * ws[o]) << t << " " << o;
    }
  }
}

TEST(ParallelFor, CoversEveryIndexOnce) {
  for (int64_t n : {0, 1, 7, 1000, 100003}) {
    std::vector<int> hits(n, 0);
    ParallelFor(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
    for (int h : hits) ASSERT_EQ(h, 1);
  }
}

}  // namespace
}  // namespace bitserve::cpu
