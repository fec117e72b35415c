// The device-made random ternary matrices of dummy-weight loads: codes only in {0, 1, 2} where the
// matrix is, code 0 in every padding position (the kernels rely on it), the synthetic
// checkpoints' distribution (44% zeros), the same words for the same seed.
#include <cmath>
#include <vector>

#include "kernels/cuda/op_test_harness.cuh"
#include "kernels/cuda/ternary/random_ternary.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

std::vector<uint32_t> Fill(int64_t rows, int64_t cols, uint64_t seed) {
  const int64_t n = PaddedRows(rows) * PaddedInputs(cols) / 16;
  DeviceBuffer<uint32_t> words = Alloc<uint32_t>(n);
  EXPECT_TRUE(FillRandomPackedTernary(words.get(), rows, cols, seed, nullptr).ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return Download(words);
}

TEST(RandomTernary, CodesPaddingAndDistribution) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t rows = 200, cols = 300;  // both padded (208 x 384)
  const std::vector<uint32_t> words = Fill(rows, cols, 42);
  const int64_t k_tiles = PaddedInputs(cols) / kTernaryKTile;
  int64_t counts[4] = {0, 0, 0, 0};
  for (int64_t r = 0; r < PaddedRows(rows); ++r) {
    for (int64_t c = 0; c < PaddedInputs(cols); ++c) {
      const TernaryCodePosition p = LocateTernaryCode(k_tiles, r, c);
      const int code = static_cast<int>((words[p.word] >> p.shift) & 3u);
      if (r >= rows || c >= cols) {
        ASSERT_EQ(code, 0) << "padding (" << r << ", " << c << ")";
      } else {
        ++counts[code];
      }
    }
  }
  EXPECT_EQ(counts[3], 0);
  const double n = static_cast<double>(rows * cols);
  EXPECT_NEAR(counts[1] / n, 14.0 / 32, 0.01);  // zeros
  EXPECT_NEAR(counts[0] / n, 9.0 / 32, 0.01);   // -1
  EXPECT_NEAR(counts[2] / n, 9.0 / 32, 0.01);   // +1
  EXPECT_EQ(Fill(rows, cols, 42), words);
  EXPECT_NE(Fill(rows, cols, 43), words);
}

}  // namespace
}  // namespace bitserve::cuda
