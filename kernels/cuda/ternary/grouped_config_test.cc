// The grouped products' host-side choices (ternary_grouped_gemv.cuh), without a GPU: every default
// configuration is one that is compiled in and fits its items, rows per item grow with the rows
// an expert gets, the item bound holds for any routing, and a tiled configuration that does not
// fit its items is refused before anything is launched.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/ternary/ternary_grouped_gemv.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

bool Compiled(const TernaryTiledConfig& c) {
  const auto& all = AllGroupedTiledConfigs();
  return std::find(all.begin(), all.end(), c) != all.end();
}

TEST(GroupedConfigTest, DefaultsAreCompiledAndFitTheirItems) {
  alignas(16) static uint32_t words[4];
  for (int64_t cols : {768, 1536, 2048, 4096, 8192}) {  // 6 .. 64 k-tiles
    const TernaryMatrixView w = PackedMatrixView(words, 1536, cols, {});
    for (int t : {16, 32, 64, 128, 256}) {
      const TernaryTiledConfig c = DefaultGroupedTiledConfig(w, t);
      EXPECT_TRUE(Compiled(c)) << c.Name();
      EXPECT_EQ(t % c.block_tokens(), 0) << c.Name() << " at " << t << " rows per item";
      EXPECT_FALSE(c.wgmma);
    }
    for (int t : {1, 8, 16, 32}) {
      const TernaryGemvConfig c = DefaultGroupedGemvConfig(w, t);
      const auto& all = AllGroupedGemvConfigs();
      EXPECT_NE(std::find(all.begin(), all.end(), c), all.end()) << c.Name() << " at " << t;
    }
  }
  // The 16-, 32- and 64-token blocks are all there (benchmarks and op tests pick any).
  std::vector<int> tokens;
  for (const TernaryTiledConfig& c : AllGroupedTiledConfigs()) tokens.push_back(c.block_tokens());
  for (int t : {16, 32, 64}) EXPECT_NE(std::find(tokens.begin(), tokens.end(), t), tokens.end());
}

TEST(GroupedConfigTest, RowsPerItemAreCompiledAndGrowWithTheRows) {
  int last = 0;
  for (double rows = 0.5; rows < 2000; rows *= 1.1) {
    const int t = GroupedRowsPerItem(rows);
    EXPECT_TRUE(t == 1 || t == 8 || t == 16 || t == 32 || t == 64 || t == 128 || t == 256) << t;
    EXPECT_GE(t, last) << "at " << rows << " rows an expert";
    last = t;
  }
  // 256 tokens x top-8 over 128 experts: all experts touched, 16 rows each.
  EXPECT_NEAR(ExpectedRowsPerExpert(2048, 128), 16.0, 0.01);
  // One token's 8 pairs touch 8 distinct experts (uniformly at random: ~7.8 on average).
  EXPECT_NEAR(ExpectedRowsPerExpert(8, 128), 1.03, 0.01);
}

TEST(GroupedConfigTest, ItemBoundHoldsForEveryRouting) {
  std::mt19937 rng(7);
  for (int experts : {4, 16, 128, 1024}) {
    for (int64_t rows : {1, 7, 64, 1000, 8192}) {
      for (int t : {1, 8, 16, 32, 64, 128, 256}) {
        for (int trial = 0; trial < 20; ++trial) {
          std::vector<int64_t> per(experts, 0);
          // Skewed routings too: trial 0 puts every row on one expert.
          const int spread = trial == 0 ? 1 : std::max(1, experts >> (trial % 4));
          for (int64_t r = 0; r < rows; ++r) ++per[rng() % spread];
          int64_t items = 0;
          for (int64_t n : per) items += (n + t - 1) / t;
          ASSERT_LE(items, MaxGroupedItems(rows, experts, t))
              << rows << " rows over " << experts << " experts, " << t << " per item";
        }
      }
    }
  }
}

TEST(GroupedConfigTest, RefusesTiledBlocksThatDoNotDivideItems) {
  const TernaryTiledConfig* wide = nullptr;
  for (const TernaryTiledConfig& c : AllGroupedTiledConfigs()) {
    if (c.block_tokens() == 64) wide = &c;
  }
  ASSERT_NE(wide, nullptr);
  // Host memory standing in for device buffers: the refusal comes before any launch or access.
  alignas(16) static uint32_t words[PaddedRows(128) * PaddedInputs(256) / 16];
  alignas(16) static int8_t x[4 * PaddedInputs(256)];
  static float scales[4];
  static int32_t sums[4], acc[4 * 128], num_items[1];
  static GroupedProductItem items[4];
  GroupedTernaryWeights w;
  w.first = PackedMatrixView(words, 128, 256, {});
  w.expert_words = PaddedRows(128) * PaddedInputs(256) / 16;
  w.num_experts = 1;
  Int8Activations xa;
  xa.values = x;
  xa.scales = scales;
  xa.sums = sums;
  xa.rows = 4;
  xa.cols = 256;
  xa.stride = PaddedInputs(256);
  GroupedRows rows{items, num_items, 4, 32, nullptr};
  rows.tiled = wide;
  const absl::Status s = GroupedTernaryGemv(w, xa, rows, nullptr, acc, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("is not compiled in for 32 rows per item"), std::string::npos) << s;
  // A configuration that is not a grouped one at all (a wgmma shape).
  TernaryTiledConfig wgmma{8, 1, 1, 16, 4};
  wgmma.wgmma = true;
  rows.rows_per_item = 128;
  rows.tiled = &wgmma;
  const absl::Status t = GroupedTernaryGemv(w, xa, rows, nullptr, acc, nullptr);
  EXPECT_EQ(t.code(), absl::StatusCode::kInvalidArgument) << t;
  EXPECT_NE(t.message().find(wgmma.Name()), std::string::npos) << t;
}

}  // namespace
}  // namespace bitserve::cuda
