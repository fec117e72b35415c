#include "runtime/paged_kv_cache.h"

#include <vector>

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

TEST(PagedKvCache, RowsLandInTheirBlocksAndGatherInPositionOrder) {
  PagedKvCache cache(SmallConfig(), 8, 4);
  EXPECT_EQ(cache.row_floats(), 8);
  EXPECT_EQ(cache.allocated_blocks(), 0);
  const std::vector<int32_t> a = {5, 1, 7};  // positions 0-3 in block 5, 4-7 in 1, 8-11 in 7
  const std::vector<int32_t> b = {2, 0};
  for (int p = 0; p < 10; ++p) {
    for (int l = 0; l < 2; ++l) {
      cache.KeyRow(l, a, p)[0] = p + 100 * l;
      cache.ValueRow(l, a, p)[7] = -p - 100 * l;
      cache.KeyRow(l, b, p % 8)[3] = 1000;  // another sequence's blocks are other memory
    }
  }
  EXPECT_EQ(cache.allocated_blocks(), 5);
  std::vector<float> k(10 * 8), v(10 * 8);
  for (int l = 0; l < 2; ++l) {
    cache.Gather(l, a, 10, k.data(), v.data());
    for (int p = 0; p < 10; ++p) {
      EXPECT_EQ(k[p * 8 + 0], p + 100 * l) << "layer " << l << " position " << p;
      EXPECT_EQ(v[p * 8 + 7], -p - 100 * l);
      EXPECT_EQ(k[p * 8 + 3], 0);
    }
  }
  EXPECT_EQ(cache.KeyRow(1, a, 9), cache.KeyRow(1, std::vector<int32_t>{7, 7, 7}, 1));
}

}  // namespace
}  // namespace bitserve
