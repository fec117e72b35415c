#include "scheduler/kv_block_allocator.h"

#include <set>
#include <span>
#include <vector>

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

std::vector<BlockHash> Hashes(std::vector<int32_t> tokens, int block_size) {
  std::vector<BlockHash> out;
  BlockHash parent = RootBlockHash(block_size);
  for (size_t i = 0; i + block_size <= tokens.size(); i += block_size) {
    parent = ChainBlockHash(parent, std::span<const int32_t>(tokens.data() + i, block_size));
    out.push_back(parent);
  }
  return out;
}

TEST(BlockHash, ChainsOverEveryEarlierToken) {
  const auto a = Hashes({1, 2, 3, 4, 5, 6, 7, 8}, 4);
  const auto b = Hashes({1, 2, 3, 4, 5, 6, 7, 9}, 4);
  const auto c = Hashes({0, 2, 3, 4, 5, 6, 7, 8}, 4);
  EXPECT_EQ(a[0], b[0]);
  EXPECT_FALSE(a[1] == b[1]);
  EXPECT_FALSE(a[1] == c[1]) << "the second block's name depends on the first block's tokens";
  EXPECT_FALSE(Hashes({1, 2, 3, 4}, 4)[0] == Hashes({1, 2, 3, 4, 0, 0}, 2)[1]);
  EXPECT_FALSE(RootBlockHash(4) == RootBlockHash(8));
}

TEST(KvBlockAllocator, PublishedBlocksAreSharedAndCachedAfterFree) {
  KvBlockAllocator blocks(8, 4);
  const auto h = Hashes({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 4);
  ASSERT_TRUE(blocks.TryGrow(1, 10));  // 3 blocks, the last one partial
  blocks.Publish(1, 0, h[0]);
  blocks.Publish(1, 1, h[1]);
  EXPECT_EQ(blocks.num_cached_blocks(), 2);
  // Matched while held: shared, not counted free.
  auto m = blocks.MatchPrefix(0, h);
  EXPECT_EQ(m.blocks, 2);
  EXPECT_EQ(m.idle, 0);
  blocks.AttachPrefix(2, 0, h, 2);
  EXPECT_EQ(blocks.block_table(2),
            std::vector<int32_t>(blocks.block_table(1).begin(), blocks.block_table(1).begin() + 2));
  ASSERT_TRUE(blocks.TryGrow(2, 12));  // its own third block
  EXPECT_EQ(blocks.num_used_blocks(), 4);
  EXPECT_EQ(blocks.num_sequences(), 2);
  // The same content computed again elsewhere is not published twice.
  blocks.Publish(2, 2, h[2]);
  ASSERT_TRUE(blocks.TryGrow(3, 4));
  blocks.Publish(3, 0, h[0]);
  EXPECT_EQ(blocks.num_cached_blocks(), 3);
  blocks.Free(3);
  // Freed by one holder: still used by the other. Freed by both: idle, cached, counted free.
  blocks.Free(1);
  EXPECT_EQ(blocks.num_used_blocks(), 3);
  blocks.Free(2);
  EXPECT_EQ(blocks.num_used_blocks(), 0);
  EXPECT_EQ(blocks.num_free_blocks(), 8);
  EXPECT_EQ(blocks.num_cached_blocks(), 3);
  m = blocks.MatchPrefix(0, h);
  EXPECT_EQ(m.blocks, 3);
  EXPECT_EQ(m.idle, 3);
  blocks.AttachPrefix(4, 0, h, 3);
  EXPECT_EQ(blocks.num_free_blocks(), 5);
  blocks.Free(4);
  EXPECT_EQ(blocks.num_free_blocks(), 8);
}

TEST(KvBlockAllocator, IdleCachedBlocksAreEvictedLeastRecentlyUsedFirst) {
  KvBlockAllocator blocks(4, 2);
  const auto a = Hashes({1, 1, 2, 2}, 2), b = Hashes({3, 3}, 2);
  ASSERT_TRUE(blocks.TryGrow(1, 4));
  blocks.Publish(1, 0, a[0]);
  blocks.Publish(1, 1, a[1]);
  ASSERT_TRUE(blocks.TryGrow(2, 2));
  blocks.Publish(2, 0, b[0]);
  blocks.Free(1);  // a's blocks idle first (its second block before its first)
  blocks.Free(2);  // then b's
  EXPECT_EQ(blocks.num_free_blocks(), 4);
  // One never-cached block, then the least recently freed: a's second block.
  ASSERT_TRUE(blocks.TryGrow(3, 4));
  EXPECT_EQ(blocks.num_cached_blocks(), 2);
  EXPECT_EQ(blocks.MatchPrefix(0, a).blocks, 1);
  EXPECT_EQ(blocks.MatchPrefix(0, b).blocks, 1);
  ASSERT_TRUE(blocks.TryGrow(3, 6));  // then a's first
  EXPECT_EQ(blocks.MatchPrefix(0, a).blocks, 0);
  EXPECT_EQ(blocks.MatchPrefix(0, b).blocks, 1);
  EXPECT_FALSE(blocks.TryGrow(4, 4)) << "one block left (b's), two asked";
  EXPECT_EQ(blocks.MatchPrefix(0, b).blocks, 1) << "a refused request evicts nothing";
  blocks.Free(3);
}

TEST(KvBlockAllocator, ClearCacheForgetsEveryPublishedBlock) {
  KvBlockAllocator blocks(4, 2);
  const auto h = Hashes({1, 1, 2, 2}, 2);
  ASSERT_TRUE(blocks.TryGrow(1, 4));
  blocks.Publish(1, 0, h[0]);
  blocks.Publish(1, 1, h[1]);
  ASSERT_TRUE(blocks.TryGrow(2, 2));
  blocks.Publish(2, 0, Hashes({7, 7}, 2)[0]);
  blocks.Free(2);
  blocks.ClearCache();
  EXPECT_EQ(blocks.num_cached_blocks(), 0);
  EXPECT_EQ(blocks.MatchPrefix(0, h).blocks, 0);
  EXPECT_EQ(blocks.num_free_blocks(), 2);
  blocks.Free(1);
  EXPECT_EQ(blocks.num_free_blocks(), 4);
  EXPECT_EQ(blocks.num_cached_blocks(), 0);
}

TEST(KvBlockAllocator, EachPoolHasItsOwnCache) {
  KvBlockAllocator blocks(8, 2, 2);
  const auto h = Hashes({5, 5}, 2);
  ASSERT_TRUE(blocks.TryGrow(1, 2, 1));
  blocks.Publish(1, 0, h[0]);
  EXPECT_EQ(blocks.MatchPrefix(0, h).blocks, 0);
  EXPECT_EQ(blocks.MatchPrefix(1, h).blocks, 1);
  blocks.Free(1);
}

}  // namespace
}  // namespace bitserve::scheduler
