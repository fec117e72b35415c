// The GPU weight layout on the host: the picture in ternary_layout.h, the repacking, the scale
// folding, and the packed-layout product model against the CPU reference product.
#include "kernels/cuda/ternary/ternary_layout.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitserve::cuda {
namespace {

TEST(TernaryLayout, PaddingRoundsUp) {
  EXPECT_EQ(PaddedRows(1), 16);
  EXPECT_EQ(PaddedRows(96), 96);
  EXPECT_EQ(PaddedRows(200), 208);
  EXPECT_EQ(PaddedInputs(96), 128);
  EXPECT_EQ(PaddedInputs(2560), 2560);
  EXPECT_EQ(PaddedInputs(200), 256);
}

// The header's picture, checked at its corners.
TEST(TernaryLayout, PositionsFollowThePicture) {
  const int64_t k_tiles = 3;
  // Row 0, input 0: tile 0, lane 0, word .x, bits 0-1.
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 0).word, 0);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 0).shift, 0);
  // Input 1 is byte 1 of the same word; input 4 is the next 2-bit group of byte 0.
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 1).shift, 8);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 4).shift, 2);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 15).shift, 8 * 3 + 2 * 3);
  // Input 16 belongs to lane 1 (t = 1).
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 16).word, 4);
  // Row 8 is word .y of lane 0; input 64 is word .z; row 8 input 64 is .w.
  EXPECT_EQ(LocateTernaryCode(k_tiles, 8, 0).word, 1);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 64).word, 2);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 8, 64).word, 3);
  // Row 1 is lane 4 (g = 1).
  EXPECT_EQ(LocateTernaryCode(k_tiles, 1, 0).word, 16);
  // Input 128 is the next tile of the same row tile; row 16 the next row tile.
  EXPECT_EQ(LocateTernaryCode(k_tiles, 0, 128).word, 128);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 16, 0).word, 3 * 128);
  // Last code of a tile: row 15, input 127 -> lane 31, .w, bits of input 4*3+3.
  EXPECT_EQ(LocateTernaryCode(k_tiles, 15, 127).word, 127);
  EXPECT_EQ(LocateTernaryCode(k_tiles, 15, 127).shift, 8 * 3 + 2 * 3);
}

std::vector<int8_t> RandomTernary(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-1, 1);
  std::vector<int8_t> v(n);
  for (int8_t& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

TEST(TernaryLayout, RepackRoundTripsAndPadsWithCodeZero) {
  std::mt19937 rng(7);
  const int64_t rows = 37, cols = 200;
  const std::vector<int8_t> w = RandomTernary(rows * cols, rng);
  auto packed = PackTernaryMatrix(w.data(), rows, cols, {});
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(packed->padded_rows, 48);
  EXPECT_EQ(packed->padded_cols, 256);
  EXPECT_EQ(packed->bytes(), 48 * 256 / 4);
  for (int64_t r = 0; r < packed->padded_rows; ++r) {
    for (int64_t k = 0; k < packed->padded_cols; ++k) {
      const int expected = (r < rows && k < cols) ? w[r * cols + k] + 1 : 0;
      ASSERT_EQ(TernaryCodeAt(*packed, r, k), expected) << r << ", " << k;
    }
  }
}

TEST(TernaryLayout, RejectsBadInput) {
  const std::vector<int8_t> w = {0, 1, -1, 2};
  EXPECT_EQ(PackTernaryMatrix(w.data(), 1, 4, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackTernaryMatrix(w.data(), 0, 4, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  cpu::WeightScale bad;
  bad.value = std::nanf("");
  EXPECT_EQ(PackTernaryMatrix(w.data(), 1, 3, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TernaryLayout, FoldsOnlyExactScales) {
  cpu::WeightScale autobit{0.7f, false};
  EXPECT_EQ(FoldWeightScale(autobit).mode, TernaryOutputScale::Mode::kMultiply);
  EXPECT_EQ(FoldWeightScale(autobit).value, 0.7f);
  cpu::WeightScale pow2{0.25f, true};
  EXPECT_EQ(FoldWeightScale(pow2).mode, TernaryOutputScale::Mode::kMultiply);
  EXPECT_EQ(FoldWeightScale(pow2).value, 4.0f);
  cpu::WeightScale other{0.3f, true};
  EXPECT_EQ(FoldWeightScale(other).mode, TernaryOutputScale::Mode::kDivideProduct);
  EXPECT_EQ(FoldWeightScale(other).value, 0.3f);
  cpu::WeightScale huge{std::ldexp(1.0f, 40), true};
  EXPECT_EQ(FoldWeightScale(huge).mode, TernaryOutputScale::Mode::kDivideProduct);
}

// The packed model (what the kernels compute, word by word) equals the CPU reference product
// exactly, in int32 and through the folded float epilogue, for both scale conventions.
TEST(TernaryLayout, PackedProductMatchesCpuReference) {
  std::mt19937 rng(11);
  for (const auto& [rows, cols, m] :
       {std::tuple<int64_t, int64_t, int64_t>{96, 200, 3}, {200, 96, 2}, {64, 384, 5}}) {
    for (const cpu::WeightScale scale :
         {cpu::WeightScale{1.7f, false}, cpu::WeightScale{0.5f, true},
          cpu::WeightScale{0.37f, true}}) {
      const std::vector<int8_t> w = RandomTernary(rows * cols, rng);
      auto packed = PackTernaryMatrix(w.data(), rows, cols, scale);
      ASSERT_TRUE(packed.ok());
      const int64_t stride = PaddedInputs(cols);
      std::vector<int8_t> x(m * stride), dense(m * cols);
      std::vector<int32_t> sums(m, 0);
      std::vector<float> x_scale(m);
      std::uniform_int_distribution<int> byte(-128, 127);
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t k = 0; k < stride; ++k) {
          x[t * stride + k] = static_cast<int8_t>(byte(rng));  // padding too: must not matter
          if (k < cols) {
            dense[t * cols + k] = x[t * stride + k];
            sums[t] += x[t * stride + k];
          }
        }
        x_scale[t] = 127.0f / std::uniform_real_distribution<float>(0.01f, 9.0f)(rng);
      }
      std::vector<int32_t> expected(m * rows), got(m * rows);
      cpu::TernaryMatmulInt32(dense.data(), m, w.data(), rows, cols, expected.data());
      PackedTernaryMatmulInt32Reference(*packed, x.data(), stride, sums.data(), m, got.data());
      ASSERT_EQ(got, expected);

      std::vector<float> y(m * rows);
      cpu::TernaryMatmul(dense.data(), x_scale.data(), m, w.data(), rows, cols, scale, y.data());
      for (int64_t i = 0; i < m * rows; ++i) {
        const float folded = ApplyTernaryOutputScale(got[i], x_scale[i / rows], packed->scale);
        ASSERT_EQ(folded, y[i]) << "element " << i << " scale " << scale.value;
      }
    }
  }
}

}  // namespace
}  // namespace bitserve::cuda
