// The KV cache element formats (kernels/kv_cache_format.h) against independent references: the
// fp16 conversions against the compiler's _Float16 (IEEE binary16, round to nearest even), the
// int8/int4 rows against hand-worked bytes (rounding ties, nibble order) and, on random rows,
// against the error bounds the formats promise.
#include "kernels/cpu/kv_quant.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/bf16.h"
#include "gtest/gtest.h"

namespace bitserve::cpu {
namespace {

uint16_t HalfBitsOf(_Float16 h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

float FloatOfBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(KvCacheFormat, HalfToFloatIsExactForEveryPattern) {
  for (uint32_t b = 0; b < 65536; ++b) {
    _Float16 h;
    const uint16_t bits = static_cast<uint16_t>(b);
    std::memcpy(&h, &bits, 2);
    const float want = static_cast<float>(h);
    const float got = KvHalfToFloat(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << b;
    } else {
      EXPECT_EQ(std::memcmp(&want, &got, 4), 0) << "bits " << b << ": " << got << " vs " << want;
    }
  }
}

TEST(KvCacheFormat, FloatToHalfRoundsToNearestEvenLikeTheCompiler) {
  std::vector<float> values = {0.0f,          -0.0f,          1.0f,          65504.0f,
                               65519.99f,     65520.0f,       1e9f,          5.9604645e-8f,
                               2.9802322e-8f, 2.98023259e-8f, 6.1035156e-5f, 6.1035152e-5f,
                               -3.1e-6f,      0.02f,          1.0f / 3.0f};
  // Every fp16 value, the midpoints between neighbours (ties) and a float on each side of them.
  for (uint32_t b = 0; b < 0x7c00; ++b) {
    const float lo = KvHalfToFloat(static_cast<uint16_t>(b));
    const float hi = KvHalfToFloat(static_cast<uint16_t>(b + 1));
    const float mid = (lo + hi) / 2;  // exact: fp16 neighbours have 12 significant bits together
    for (float f : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      values.push_back(f);
      values.push_back(-f);
    }
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = (rng() & 0x807fffffu) | ((100u + rng() % 60u) << 23);  // 2^-27 .. 2^32
    values.push_back(FloatOfBits(u));
  }
  for (float f : values) {
    ASSERT_EQ(KvFloatToHalfRne(f), HalfBitsOf(static_cast<_Float16>(f))) << f;
  }
  EXPECT_TRUE(std::isnan(KvHalfToFloat(KvFloatToHalfRne(NAN))));
}

TEST(KvCacheFormat, FloatToHalfDownIsTheLargestHalfNotAbove) {
  std::mt19937 rng(12);
  for (int i = 0; i < 100000; ++i) {
    const float f = std::ldexp(static_cast<float>(static_cast<int32_t>(rng())) / 2147483648.0f,
                               static_cast<int>(rng() % 40) - 24);
    const uint16_t h = KvFloatToHalfDown(f);
    const float v = KvHalfToFloat(h);
    ASSERT_LE(v, f) << f;
    // The next fp16 value up is above f.
    const uint16_t up = (h & 0x8000u) ? (h == 0x8000u ? 0x0001u : h - 1u) : h + 1u;
    ASSERT_GT(KvHalfToFloat(up), f) << f << " got " << v;
  }
  EXPECT_EQ(KvFloatToHalfDown(1.0f), 0x3c00);
  EXPECT_EQ(KvFloatToHalfDown(-1e-9f), 0x8001);  // not -0: the least negative subnormal
}

TEST(KvCacheFormat, Int8HandWorkedRows) {
  // abs max 2.54: scale fp16(0.02) = 0x251f = 0.0200042724609375; x / scale = 126.97, -63.49, 0,
  // 0.4999 -> 127, -63, 0, 0.
  const float a[4] = {2.54f, -1.27f, 0.0f, 0.01f};
  uint8_t q[4];
  uint16_t scale;
  QuantizeKvRow(KvDtype::kInt8, a, 1, 4, q, &scale);
  EXPECT_EQ(scale, 0x251f);
  EXPECT_EQ(static_cast<int8_t>(q[0]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[1]), -63);
  EXPECT_EQ(q[2], 0);
  EXPECT_EQ(q[3], 0);
  // scale 1 exactly: ties go to even.
  const float b[4] = {127.0f, 2.5f, 3.5f, -2.5f};
  QuantizeKvRow(KvDtype::kInt8, b, 1, 4, q, &scale);
  EXPECT_EQ(scale, 0x3c00);
  EXPECT_EQ(static_cast<int8_t>(q[1]), 2);
  EXPECT_EQ(static_cast<int8_t>(q[2]), 4);
  EXPECT_EQ(static_cast<int8_t>(q[3]), -2);
  // All zeros: scale 0, q 0, dequantized 0.
  const float z[4] = {0, 0, 0, 0};
  float back[4];
  QuantizeKvRow(KvDtype::kInt8, z, 1, 4, q, &scale);
  DequantizeKvRow(KvDtype::kInt8, q, &scale, 1, 4, back);
  EXPECT_EQ(scale, 0);
  for (float v : back) EXPECT_EQ(v, 0.0f);
}

TEST(KvCacheFormat, Int4HandWorkedRowShowsTheNibbleOrder) {
  // x_i = 0.5 i - 1: zero -1, scale 7.5 / 15 = 0.5 (both exact), q_i = i.
  float x[16];
  for (int i = 0; i < 16; ++i) x[i] = 0.5f * i - 1.0f;
  uint8_t q[8];
  uint16_t params[2];
  QuantizeKvRow(KvDtype::kInt4, x, 1, 16, q, params);
  EXPECT_EQ(params[0], 0x3800);  // scale 0.5
  EXPECT_EQ(params[1], 0xbc00);  // zero -1
  for (int j = 0; j < 8; ++j) EXPECT_EQ(q[j], (2 * j) | ((2 * j + 1) << 4)) << j;
  float back[16];
  DequantizeKvRow(KvDtype::kInt4, q, params, 1, 16, back);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(back[i], x[i]);
  // A zero that does not fit fp16 exactly is rounded down, so no element goes below it.
  const float y[2] = {0.1f, 0.3f};
  QuantizeKvRow(KvDtype::kInt4, y, 1, 2, q, params);
  EXPECT_LE(KvHalfToFloat(params[1]), 0.1f);
  EXPECT_EQ(q[0] & 15, 0);
  EXPECT_EQ(q[0] >> 4, 15);
}

// Random rows with an outlier channel: every element within half a step of its value (plus the
// float rounding of the int4 add), and the quantized values in range.
TEST(KvCacheFormat, RandomRowsStayWithinHalfAStep) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int kHeads = 3, kDim = 64;
  for (int trial = 0; trial < 2000; ++trial) {
    const float spread = std::ldexp(1.0f, static_cast<int>(rng() % 16) - 6);
    const float offset = (trial % 3 == 0) ? 40.0f * normal(rng) : 0.0f;
    std::vector<float> x(kHeads * kDim);
    for (int i = 0; i < kHeads * kDim; ++i) {
      x[i] = offset + spread * normal(rng) * ((i % kDim) == 5 ? 30.0f : 1.0f);
    }
    for (KvDtype dtype : {KvDtype::kInt8, KvDtype::kInt4}) {
      std::vector<uint8_t> data(kHeads * KvHeadBytes(dtype, kDim));
      std::vector<uint16_t> params(kHeads * 2);
      std::vector<float> back(x.size());
      QuantizeKvRow(dtype, x.data(), kHeads, kDim, data.data(), params.data());
      DequantizeKvRow(dtype, data.data(), params.data(), kHeads, kDim, back.data());
      for (int h = 0; h < kHeads; ++h) {
        const float scale = KvHalfToFloat(params[KvParamHalves(dtype) * h]);
        const float zero = dtype == KvDtype::kInt4 ? KvHalfToFloat(params[2 * h + 1]) : 0.0f;
        for (int i = 0; i < kDim; ++i) {
          const float v = x[h * kDim + i];
          const double bound = 0.5 * scale * (1 + 1e-3) + 1e-6 * std::fabs(zero);
          ASSERT_LE(std::fabs(back[h * kDim + i] - v), bound)
              << KvDtypeName(dtype) << " trial " << trial << " head " << h << " elem " << i;
        }
        if (dtype == KvDtype::kInt8) {
          for (int i = 0; i < kDim; ++i) ASSERT_NE(data[h * kDim + i], 0x80);  // never -128
        }
      }
    }
  }
}

TEST(KvCacheFormat, Bf16AndF32Rows) {
  const float x[4] = {1.0f, 1.00390625f, -3.14159f, 1e-20f};
  uint8_t data[16];
  float back[4];
  DequantizeKvRow(KvDtype::kF32, reinterpret_cast<const uint8_t*>(x), nullptr, 1, 4, back);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], x[i]);
  QuantizeKvRow(KvDtype::kBf16, x, 1, 4, data, nullptr);
  DequantizeKvRow(KvDtype::kBf16, data, nullptr, 1, 4, back);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], Bf16ToFloat(FloatToBf16(x[i])));
  EXPECT_EQ(back[1], 1.0f);  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even wins
}

TEST(KvCacheFormat, NamesRoundTrip) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4}) {
    auto parsed = ParseKvDtype(KvDtypeName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(ParseKvDtype("fp8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseKvDtype("").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitserve::cpu
