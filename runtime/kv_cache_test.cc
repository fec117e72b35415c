#include "runtime/kv_cache.h"

#include "gtest/gtest.h"

namespace bitserve {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  return c;
}

TEST(ContiguousKvCache, GrowsKeepsRowsAndReleases) {
  ContiguousKvCache cache(SmallConfig(), 2, 100);
  EXPECT_EQ(cache.row_floats(), 8);
  for (int step = 0; step < 40; ++step) {
    ASSERT_TRUE(cache.Reserve(1, 1).ok());
    for (int l = 0; l < 2; ++l) {
      cache.KeyRow(l, 1, step)[0] = step + 100 * l;
      cache.ValueRow(l, 1, step)[7] = -step;
    }
    cache.Advance(1, 1);
  }
  EXPECT_EQ(cache.length(1), 40);
  EXPECT_EQ(cache.length(0), 0);
  for (int step = 0; step < 40; ++step) {
    EXPECT_EQ(cache.Keys(1, 1)[step * 8], step + 100);
    EXPECT_EQ(cache.Values(0, 1)[step * 8 + 7], -step);
  }
  cache.Release(1);
  EXPECT_EQ(cache.length(1), 0);
}

TEST(ContiguousKvCache, RefusesMoreThanTheLimit) {
  ContiguousKvCache cache(SmallConfig(), 1, 10);
  ASSERT_TRUE(cache.Reserve(0, 10).ok());
  cache.Advance(0, 10);
  absl::Status s = cache.Reserve(0, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(cache.length(0), 10);
}

}  // namespace
}  // namespace bitserve
