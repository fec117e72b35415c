#include "runtime/checkpoint/ternary_packing.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve {
namespace {

TEST(TernaryPacking, DecodesTransformersDocstringExample) {
  // transformers' unpack_weights docstring: packed [[0b10100001, 0b00011000],
  // [0b10010000, 0b00001010]] (shape [2, 2]) unpacks to these 8 x 2 values.
  std::vector<uint8_t> packed = {0b10100001, 0b00011000, 0b10010000, 0b00001010};
  std::vector<int8_t> values(16);
  ASSERT_TRUE(UnpackTernary(packed, 8, 2, values, "w").ok());
  std::vector<int8_t> want = {0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1};
  EXPECT_EQ(values, want);
}

TEST(TernaryPacking, RoundTripsRandomMatrices) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> d(-1, 1);
  for (auto [out, in] : {std::pair{4, 1}, {8, 3}, {640, 33}}) {
    std::vector<int8_t> t(out * in);
    for (auto& v : t) v = static_cast<int8_t>(d(rng));
    std::vector<uint8_t> packed = PackTernary(t, out, in);
    ASSERT_EQ(packed.size(), static_cast<size_t>(out / 4 * in));
    std::vector<int8_t> back(t.size());
    ASSERT_TRUE(UnpackTernary(packed, out, in, back, "w").ok());
    EXPECT_EQ(back, t);
  }
}

TEST(TernaryPacking, QuarterKLivesInBits2K) {
  // out = 8: rows 0,1 in bits 0-1; rows 2,3 in bits 2-3; rows 4,5 in 4-5; rows 6,7 in 6-7.
  std::vector<int8_t> t(8, 0);
  t[5] = 1;  // row 5 = quarter 2, packed row 1: code 2 in bits 4-5 -> 0b10 << 4; others code 1.
  std::vector<uint8_t> packed = PackTernary(t, 8, 1);
  EXPECT_EQ(packed[0], 0b01010101);
  EXPECT_EQ(packed[1], 0b01100101);
}

TEST(TernaryPacking, CodeThreeIsAnErrorNamingTensorAndPosition) {
  std::vector<uint8_t> packed = {0b01010101, 0b01010101, 0b01110101, 0b01010101};
  std::vector<int8_t> values(16);
  absl::Status s = UnpackTernary(packed, 8, 2, values, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("model.layers.0.mlp.up_proj.weight"));
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("[1, 0]"));
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("code 3"));
}

}  // namespace
}  // namespace bitserve
