// The expert-parallel row kernels (moe_dispatch.cuh) against plain host loops: keys from a table,
// rows gathered for dispatch, received rows' sums and local experts (with an expert not held
// reported), results put back in received order as f32 and as bf16 (base/bf16.h's rounding), and
// bf16 back to float. Copies and casts: every comparison is exact.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "base/bf16.h"
#include "kernels/cuda/moe/moe_dispatch.cuh"
#include "kernels/cuda/op_test_harness.cuh"

namespace bitserve::cuda {
namespace {

template <typename T>
DeviceBuffer<T> Uploaded(const std::vector<T>& v) {
  DeviceBuffer<T> d = Alloc<T>(std::max<int64_t>(static_cast<int64_t>(v.size()), 1));
  EXPECT_TRUE(d.CopyFromHost(v.data(), static_cast<int64_t>(v.size())).ok());
  return d;
}

class MoeDispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(MoeDispatchTest, MapExpertsAndGatherRows) {
  Rng rng(BaseSeed());
  const int experts = 12, rows = 37;
  const int64_t row_bytes = 64, stride = 96;
  std::vector<int32_t> table(experts), ids(rows);
  for (int e = 0; e < experts; ++e) table[e] = (e * 5) % experts;
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.Bits() % experts);
  ids[3] = -1;  // outside the table: written as 0
  ids[4] = experts;
  DeviceBuffer<int32_t> d_ids = Uploaded(ids), d_table = Uploaded(table),
                        keys = Alloc<int32_t>(rows);
  ASSERT_OK(MapExperts(d_ids.get(), rows, d_table.get(), experts, keys.get(), nullptr));
  const std::vector<int32_t> got_keys = Download(keys);
  for (int i = 0; i < rows; ++i) {
    const int32_t want = ids[i] >= 0 && ids[i] < experts ? table[ids[i]] : 0;
    ASSERT_EQ(got_keys[i], want) << "row " << i;
  }

  const int tokens = 9;
  std::vector<int8_t> x(tokens * stride);
  for (int8_t& v : x) v = static_cast<int8_t>(static_cast<int>(rng.Bits() % 255) - 127);
  std::vector<float> scales(tokens);
  for (float& s : scales) s = rng.Uniform(0.1f, 9.0f);
  std::vector<int32_t> source(rows), key_experts(experts);
  for (int32_t& s : source) s = static_cast<int32_t>(rng.Bits() % tokens);
  for (int k = 0; k < experts; ++k) key_experts[k] = experts - 1 - k;
  DeviceBuffer<int8_t> d_x = Uploaded(x), values = Alloc<int8_t>(rows * row_bytes);
  DeviceBuffer<float> d_scales = Uploaded(scales), out_scales = Alloc<float>(rows);
  DeviceBuffer<int32_t> d_source = Uploaded(source), d_key_experts = Uploaded(key_experts),
                        out_experts = Alloc<int32_t>(rows);
  ASSERT_OK(GatherDispatchRows(d_x.get(), stride, d_scales.get(), d_source.get(), keys.get(),
                               d_key_experts.get(), rows, row_bytes, values.get(), out_scales.get(),
                               out_experts.get(), nullptr));
  const std::vector<int8_t> got_values = Download(values);
  const std::vector<float> got_scales = Download(out_scales);
  const std::vector<int32_t> got_experts = Download(out_experts);
  for (int r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < row_bytes; ++i) {
      ASSERT_EQ(got_values[r * row_bytes + i], x[source[r] * stride + i]) << r << "," << i;
    }
    ASSERT_EQ(got_scales[r], scales[source[r]]);
    ASSERT_EQ(got_experts[r], key_experts[got_keys[r]]);
  }
  EXPECT_FALSE(GatherDispatchRows(d_x.get(), stride, d_scales.get(), d_source.get(), keys.get(),
                                  d_key_experts.get(), rows, 62, values.get(), out_scales.get(),
                                  out_experts.get(), nullptr)
                   .ok());
}

TEST_F(MoeDispatchTest, LocalExpertRowsSumAndMapAndReportForeignExperts) {
  Rng rng(BaseSeed() ^ 1);
  const int experts = 8, rows = 50;
  const int64_t row_bytes = 2048 + 16;
  std::vector<int8_t> values(rows * row_bytes);
  for (int8_t& v : values) v = static_cast<int8_t>(static_cast<int>(rng.Bits() % 256) - 128);
  const std::vector<int32_t> local_index = {-1, -1, -1, -1, 0, 1, 2, 3};  // rank 1 of 2
  std::vector<int32_t> ids(rows);
  for (int32_t& id : ids) id = 4 + static_cast<int32_t>(rng.Bits() % 4);
  DeviceBuffer<int8_t> d_values = Uploaded(values);
  DeviceBuffer<int32_t> d_ids = Uploaded(ids), d_local_index = Uploaded(local_index),
                        sums = Alloc<int32_t>(rows), local = Alloc<int32_t>(rows),
                        bad = Uploaded(std::vector<int32_t>{0});
  ASSERT_OK(LocalExpertRows(d_values.get(), rows, row_bytes, d_ids.get(), d_local_index.get(),
                            experts, sums.get(), local.get(), bad.get(), nullptr));
  const std::vector<int32_t> got_sums = Download(sums), got_local = Download(local);
  for (int r = 0; r < rows; ++r) {
    const int32_t want = std::accumulate(values.begin() + r * row_bytes,
                                         values.begin() + (r + 1) * row_bytes, int32_t{0});
    ASSERT_EQ(got_sums[r], want) << "row " << r;
    ASSERT_EQ(got_local[r], ids[r] - 4) << "row " << r;
  }
  EXPECT_EQ(Download(bad)[0], 0);
  ids[17] = 2;  // an expert of the other rank
  DeviceBuffer<int32_t> d_bad_ids = Uploaded(ids);
  ASSERT_OK(LocalExpertRows(d_values.get(), rows, row_bytes, d_bad_ids.get(), d_local_index.get(),
                            experts, sums.get(), local.get(), bad.get(), nullptr));
  EXPECT_EQ(Download(bad)[0], 2 + 1);
  EXPECT_EQ(Download(local)[17], 0);
}

TEST_F(MoeDispatchTest, ResultsInReceivedOrderAsF32AndBf16) {
  Rng rng(BaseSeed() ^ 2);
  const int rows = 23;
  const int64_t hidden = 300;
  std::vector<float> y(rows * hidden);
  for (float& v : y) v = rng.Normal(3.0f);
  y[5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int32_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<unsigned>(rng.Bits())));
  DeviceBuffer<float> d_y = Uploaded(y);
  DeviceBuffer<int32_t> d_order = Uploaded(order);
  DeviceBuffer<float> f32 = Alloc<float>(rows * hidden), back = Alloc<float>(rows * hidden);
  DeviceBuffer<uint16_t> bf16 = Alloc<uint16_t>(rows * hidden);
  ASSERT_OK(
      ResultsInReceivedOrder(d_y.get(), d_order.get(), rows, hidden, false, f32.get(), nullptr));
  ASSERT_OK(
      ResultsInReceivedOrder(d_y.get(), d_order.get(), rows, hidden, true, bf16.get(), nullptr));
  ASSERT_OK(Bf16ToFloat(bf16.get(), rows * hidden, back.get(), nullptr));
  const std::vector<float> got = Download(f32), got_back = Download(back);
  const std::vector<uint16_t> got_bf16 = Download(bf16);
  for (int r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < hidden; ++i) {
      const float want = y[order[r] * hidden + i];
      const int64_t at = r * hidden + i;
      ASSERT_EQ(std::memcmp(&got[at], &want, 4), 0) << r << "," << i;
      ASSERT_EQ(got_bf16[at], FloatToBf16(want)) << r << "," << i;
      const float widened = bitserve::Bf16ToFloat(FloatToBf16(want));
      ASSERT_EQ(std::memcmp(&got_back[at], &widened, 4), 0) << r << "," << i;
    }
  }
}

}  // namespace
}  // namespace bitserve::cuda
