#include "scheduler/kv_block_allocator.h"

#include <set>

#include "gtest/gtest.h"

namespace bitserve::scheduler {
namespace {

TEST(KvBlockAllocator, CapacityNumbers) {
  KvBlockAllocator blocks(10, 16);
  EXPECT_EQ(blocks.num_blocks(), 10);
  EXPECT_EQ(blocks.block_size(), 16);
  EXPECT_EQ(blocks.num_free_blocks(), 10);
  EXPECT_EQ(blocks.num_used_blocks(), 0);
  EXPECT_EQ(blocks.capacity_tokens(), 160);
  EXPECT_EQ(blocks.BlocksForTokens(0), 0);
  EXPECT_EQ(blocks.BlocksForTokens(1), 1);
  EXPECT_EQ(blocks.BlocksForTokens(16), 1);
  EXPECT_EQ(blocks.BlocksForTokens(17), 2);
}

TEST(KvBlockAllocator, GrowsOnDemandOneBlockPerBlockSizeTokens) {
  KvBlockAllocator blocks(10, 4);
  for (int tokens = 1; tokens <= 12; ++tokens) {
    ASSERT_TRUE(blocks.TryGrow(7, tokens));
    EXPECT_EQ(blocks.block_table(7).size(), static_cast<size_t>((tokens + 3) / 4)) << tokens;
  }
  EXPECT_EQ(blocks.num_used_blocks(), 3);
  EXPECT_EQ(blocks.NewBlocksNeeded(7, 12), 0);
  EXPECT_EQ(blocks.NewBlocksNeeded(7, 13), 1);
  // Growing to fewer tokens than held keeps the table as it is.
  ASSERT_TRUE(blocks.TryGrow(7, 2));
  EXPECT_EQ(blocks.block_table(7).size(), 3u);
  EXPECT_EQ(blocks.num_sequences(), 1);
}

TEST(KvBlockAllocator, RefusesWithoutAllocatingWhenShort) {
  KvBlockAllocator blocks(4, 8);
  ASSERT_TRUE(blocks.TryGrow(1, 24));
  EXPECT_FALSE(blocks.TryGrow(2, 17));  // needs 3 blocks, 1 free
  EXPECT_TRUE(blocks.block_table(2).empty());
  EXPECT_EQ(blocks.num_free_blocks(), 1);
  EXPECT_EQ(blocks.num_sequences(), 1);
  EXPECT_TRUE(blocks.TryGrow(2, 8));
  EXPECT_EQ(blocks.num_free_blocks(), 0);
}

TEST(KvBlockAllocator, BlocksAreDistinctAndFreedBlocksComeBack) {
  KvBlockAllocator blocks(12, 2);
  for (uint64_t seq = 0; seq < 4; ++seq) ASSERT_TRUE(blocks.TryGrow(seq, 6));
  std::set<int32_t> seen;
  for (uint64_t seq = 0; seq < 4; ++seq) {
    for (int32_t b : blocks.block_table(seq)) EXPECT_TRUE(seen.insert(b).second) << b;
  }
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_EQ(blocks.num_free_blocks(), 0);

  const std::vector<int32_t> freed = blocks.block_table(2);
  blocks.Free(2);
  EXPECT_TRUE(blocks.block_table(2).empty());
  EXPECT_EQ(blocks.num_free_blocks(), 3);
  blocks.Free(2);  // nothing held: nothing happens
  EXPECT_EQ(blocks.num_free_blocks(), 3);
  ASSERT_TRUE(blocks.TryGrow(9, 6));
  EXPECT_EQ(std::set<int32_t>(blocks.block_table(9).begin(), blocks.block_table(9).end()),
            std::set<int32_t>(freed.begin(), freed.end()));

  for (uint64_t seq : {0, 1, 3, 9}) blocks.Free(seq);
  EXPECT_EQ(blocks.num_free_blocks(), 12);
  EXPECT_EQ(blocks.num_sequences(), 0);
}

}  // namespace
}  // namespace bitserve::scheduler
