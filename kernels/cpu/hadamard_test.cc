// HadamardRotateRows against an explicit Sylvester matrix product (double), and the properties the
// engines rely on: an orthonormal rotation (its own inverse, dot products kept), block-diagonal
// for head_dims that are not a power of two, the identity for odd ones.
#include "kernels/cpu/hadamard.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace bitserve::cpu {
namespace {

// Sylvester's H_n: entry (i, j) is (-1)^popcount(i & j).
double Sylvester(int i, int j) { return __builtin_popcount(i & j) % 2 == 0 ? 1.0 : -1.0; }

std::vector<float> RandomRows(int64_t rows, int head_dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(rows * head_dim);
  for (float& v : x) v = normal(rng);
  return x;
}

TEST(Hadamard, BlockIsTheLargestPowerOfTwoDividingHeadDim) {
  EXPECT_EQ(HadamardBlock(128), 128);
  EXPECT_EQ(HadamardBlock(64), 64);
  EXPECT_EQ(HadamardBlock(96), 32);
  EXPECT_EQ(HadamardBlock(80), 16);
  EXPECT_EQ(HadamardBlock(6), 2);
  EXPECT_EQ(HadamardBlock(7), 1);
  EXPECT_EQ(HadamardBlock(1), 1);
  EXPECT_EQ(HadamardNorm(128), static_cast<float>(1.0 / std::sqrt(128.0)));
  EXPECT_EQ(HadamardNorm(64), 0.125f);
}

TEST(Hadamard, MatchesSylvesterMatrixProductPerBlock) {
  for (int head_dim : {2, 4, 8, 32, 64, 96, 128, 80, 6}) {
    SCOPED_TRACE(head_dim);
    const int64_t rows = 5;
    const std::vector<float> x = RandomRows(rows, head_dim, 7u + head_dim);
    std::vector<float> y = x;
    HadamardRotateRows(y.data(), rows, head_dim);
    const int block = HadamardBlock(head_dim);
    for (int64_t r = 0; r < rows; ++r) {
      for (int d = 0; d < head_dim; ++d) {
        const int base = d / block * block;
        double want = 0;
        for (int j = 0; j < block; ++j) {
          want += Sylvester(d - base, j) * x[r * head_dim + base + j];
        }
        want /= std::sqrt(double{1.0} * block);
        EXPECT_NEAR(y[r * head_dim + d], want, 1e-6) << "row " << r << " element " << d;
      }
    }
  }
}

TEST(Hadamard, IsItsOwnInverseAndKeepsDotProducts) {
  for (int head_dim : {32, 64, 96, 128}) {
    SCOPED_TRACE(head_dim);
    const int64_t rows = 8;
    const std::vector<float> x = RandomRows(rows, head_dim, 11u + head_dim);
    std::vector<float> y = x;
    HadamardRotateRows(y.data(), rows, head_dim);
    for (int64_t a = 0; a + 1 < rows; ++a) {
      double dot_x = 0, dot_y = 0;
      for (int d = 0; d < head_dim; ++d) {
        dot_x += double{x[a * head_dim + d]} * x[(a + 1) * head_dim + d];
        dot_y += double{y[a * head_dim + d]} * y[(a + 1) * head_dim + d];
      }
      EXPECT_NEAR(dot_y, dot_x, 1e-5 * head_dim) << "rows " << a << ", " << a + 1;
    }
    HadamardRotateRows(y.data(), rows, head_dim);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-6) << i;
  }
}

TEST(Hadamard, OddHeadDimIsTheIdentity) {
  const std::vector<float> x = RandomRows(3, 7, 5);
  std::vector<float> y = x;
  HadamardRotateRows(y.data(), 3, 7);
  EXPECT_EQ(y, x);
}

TEST(Hadamard, SpreadsAnOutlierChannelOverItsBlock) {
  // One channel of 96 carries everything: after the rotation its block's 32 channels share it
  // equally (|x| / sqrt(32) each) and the other two blocks stay zero.
  std::vector<float> x(96, 0.0f);
  x[40] = 64.0f;
  HadamardRotateRows(x.data(), 1, 96);
  for (int d = 0; d < 96; ++d) {
    EXPECT_NEAR(std::fabs(x[d]), d >= 32 && d < 64 ? 64.0 / std::sqrt(32.0) : 0.0, 1e-5) << d;
  }
}

}  // namespace
}  // namespace bitserve::cpu
