#include "runtime/engine/paged_kv_cache.h"

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/kv_quant.h"

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
  EXPECT_EQ(cache.dtype(), KvDtype::kF32);
  EXPECT_EQ(cache.bytes_per_position(), 2 * 2 * 8 * 4);
  EXPECT_EQ(cache.allocated_blocks(), 0);
  const std::vector<int32_t> a = {5, 1, 7};  // positions 0-3 in block 5, 4-7 in 1, 8-11 in 7
  const std::vector<int32_t> b = {2, 0};
  for (int p = 0; p < 10; ++p) {
    for (int l = 0; l < 2; ++l) {
      std::vector<float> k(8, 0.0f), v(8, 0.0f), other(8, 0.0f);
      k[0] = p + 100 * l;
      v[7] = -p - 100 * l;
      other[3] = 1000;
      cache.Write(l, a, p, k.data(), v.data());
      cache.Write(l, b, p % 8, other.data(), other.data());  // another sequence: other memory
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
  // Position 9 of table a is row 1 of block 7.
  EXPECT_EQ(cache.RowData(1, 0, 7, 1), cache.RowData(1, 0, a[2], 9 % 4));
  EXPECT_EQ(cache.RowData(0, 0, 3, 0), nullptr);  // never written
}

// Quantized caches store exactly kernels/cpu/kv_quant.h's bytes and read back its dequantization.
TEST(PagedKvCache, QuantizedRowsHoldTheFormatBytes) {
  ModelConfig c = SmallConfig();
  c.head_dim = 6;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (KvDtype dtype : {KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4}) {
    PagedKvCache cache(c, 6, 4, dtype);
    const int64_t row = cache.row_floats(), head_bytes = KvHeadBytes(dtype, c.head_dim);
    const int halves = KvParamHalves(dtype);
    EXPECT_EQ(cache.bytes_per_position(),
              2 * 2 * c.num_key_value_heads * (head_bytes + 2 * halves));
    const std::vector<int32_t> table = {4, 0, 2};
    std::vector<float> keys(11 * row), values(11 * row);
    for (float& x : keys) x = normal(rng);
    for (float& x : values) x = normal(rng);
    for (int p = 0; p < 11; ++p) {
      cache.Write(1, table, p, keys.data() + p * row, values.data() + p * row);
    }
    std::vector<float> k(11 * row), v(11 * row);
    cache.Gather(1, table, 11, k.data(), v.data());
    for (int p = 0; p < 11; ++p) {
      for (int kv = 0; kv < 2; ++kv) {
        const float* x = (kv == 0 ? keys : values).data() + p * row;
        std::vector<uint8_t> data(c.num_key_value_heads * head_bytes);
        std::vector<uint16_t> params(c.num_key_value_heads * 2);
        cpu::QuantizeKvRow(dtype, x, c.num_key_value_heads, c.head_dim, data.data(), params.data());
        const uint8_t* stored = cache.RowData(1, kv, table[p / 4], p % 4);
        ASSERT_NE(stored, nullptr);
        EXPECT_EQ(std::memcmp(stored, data.data(), data.size()), 0)
            << KvDtypeName(dtype) << " position " << p << " kv " << kv;
        if (halves > 0) {
          EXPECT_EQ(std::memcmp(cache.RowParams(1, kv, table[p / 4], p % 4), params.data(),
                                c.num_key_value_heads * halves * 2),
                    0);
        }
        std::vector<float> want(row);
        cpu::DequantizeKvRow(dtype, data.data(), params.data(), c.num_key_value_heads, c.head_dim,
                             want.data());
        const float* got = (kv == 0 ? k : v).data() + p * row;
        EXPECT_EQ(std::memcmp(got, want.data(), row * 4), 0) << KvDtypeName(dtype) << " " << p;
      }
    }
  }
}

}  // namespace
}  // namespace bitserve
