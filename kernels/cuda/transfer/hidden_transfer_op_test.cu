// kernels/cuda/transfer/hidden_transfer.cuh against the CPU's EncodeHidden/DecodeHidden
// (kernels/hidden_transfer.h), bit for bit, in the CUDA op test harness: int8 and bf16, one row to
// a prefill chunk, 2B4T's and 70B's hidden sizes, the true row count read from the device below
// the launch bound (a padded decode bucket), rounding ties (a row whose max is 127 makes
// x * 127/max exact, and values k + 0.5 round to even), an all-zero row, bytes past the message
// left alone, and decode's padding rows zeroed.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/op_test_harness.cuh"
#include "kernels/cuda/transfer/hidden_transfer.cuh"
#include "kernels/hidden_transfer.h"

namespace bitserve::cuda {
namespace {

struct TransferCase {
  TransferDtype dtype;
  int max_rows, rows, hidden;  // rows < max_rows: the count comes from the device
};

std::vector<TransferCase> AllTransferCases() {
  std::vector<TransferCase> cases;
  for (TransferDtype d : {TransferDtype::kInt8, TransferDtype::kBf16}) {
    for (int hidden : {64, 2560, 8192}) {
      cases.push_back({d, 1, 1, hidden});
      cases.push_back({d, 16, 16, hidden});
      cases.push_back({d, 16, 5, hidden});
      cases.push_back({d, 300, 300, hidden});
    }
  }
  return cases;
}

class HiddenTransferOpTest : public GpuOpTest<TransferCase> {};

TEST_P(HiddenTransferOpTest, MatchesCpuReference) {
  const TransferCase& c = GetParam();
  Rng rng(BaseSeed() ^ (static_cast<uint64_t>(c.hidden) << 20) ^ (c.max_rows << 4) ^ c.rows ^
          (c.dtype == TransferDtype::kBf16 ? 1u << 31 : 0u));
  const int64_t h = c.hidden;
  std::vector<float> x(static_cast<size_t>(c.max_rows) * h);
  for (int t = 0; t < c.max_rows; ++t) {
    float* row = x.data() + t * h;
    switch (t % 4) {
      case 0:  // residual-stream-like values with an outlier channel
        for (int64_t i = 0; i < h; ++i) row[i] = rng.Normal(2.0f);
        row[t % h] = 40.0f;
        break;
      case 1:  // max 127 -> scale 1, inv 1: half-way values round to even
        for (int64_t i = 0; i < h; ++i)
          row[i] = static_cast<float>(static_cast<int>(rng.Uniform(-126, 126))) + 0.5f;
        row[0] = 127.0f;
        break;
      case 2:  // all zero: scale 0
        for (int64_t i = 0; i < h; ++i) row[i] = 0.0f;
        break;
      default:  // bf16 ties: the low 16 bits exactly 0x8000
        for (int64_t i = 0; i < h; ++i) {
          uint32_t bits = (static_cast<uint32_t>(rng.Bits()) & 0xffff0000u) | 0x8000u;
          bits = (bits & 0x807fffffu) | (static_cast<uint32_t>(120 + rng.Bits() % 16) << 23);
          std::memcpy(&row[i], &bits, 4);
        }
    }
  }
  const int64_t message = TransferBytes(c.dtype, c.rows, h);
  const int64_t capacity = TransferBytes(c.dtype, c.max_rows, h) + 64;
  std::vector<uint8_t> expected(capacity, kPoisonInt8);
  EncodeHidden(c.dtype, x.data(), c.rows, h, expected.data());

  DeviceBuffer<float> dx = Alloc<float>(x.size());
  DeviceBuffer<uint8_t> dout = Alloc<uint8_t>(capacity);
  DeviceBuffer<int32_t> drows = Alloc<int32_t>(1);
  ASSERT_OK(dx.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(dout.CopyFromHost(std::vector<uint8_t>(capacity, kPoisonInt8).data(), capacity));
  ASSERT_OK(drows.CopyFromHost(&c.rows, 1));
  const int32_t* device_rows = c.rows < c.max_rows ? drows.get() : nullptr;
  ASSERT_OK(EncodeHidden(c.dtype, dx.get(), c.max_rows, device_rows, h, dout.get(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(dout), expected, h,
                 absl::StrCat("encoded message (", message, " bytes) and after"));

  // Decode the CPU's bytes: rows [0, rows) as DecodeHidden, the rest zero.
  std::vector<float> decoded(x.size(), 0.0f);
  DecodeHidden(c.dtype, expected.data(), c.rows, h, decoded.data());
  DeviceBuffer<uint8_t> din = Alloc<uint8_t>(capacity);
  ASSERT_OK(din.CopyFromHost(expected.data(), capacity));
  ASSERT_OK(dx.CopyFromHost(std::vector<float>(x.size(), std::nanf("")).data(), x.size()));
  ASSERT_OK(DecodeHidden(c.dtype, din.get(), c.max_rows, device_rows, h, dx.get(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(dx), decoded, h, "decoded hidden states");
}

INSTANTIATE_TEST_SUITE_P(HiddenTransfer, HiddenTransferOpTest,
                         ::testing::ValuesIn(AllTransferCases()),
                         [](const ::testing::TestParamInfo<TransferCase>& info) {
                           const TransferCase& c = info.param;
                           return absl::StrCat(TransferDtypeName(c.dtype), "_h", c.hidden, "_rows",
                                               c.rows, "_of", c.max_rows);
                         });

TEST(HiddenTransferOps, RejectsBadShapes) {
  EXPECT_FALSE(EncodeHidden(TransferDtype::kInt8, nullptr, 4, nullptr, 6, nullptr, nullptr).ok());
  EXPECT_FALSE(DecodeHidden(TransferDtype::kBf16, nullptr, -1, nullptr, 8, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace bitserve::cuda
