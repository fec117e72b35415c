// The CUDA op test harness's shared pieces (op_test.cu, paged_attention_op_test.cu; one binary):
// fresh random inputs from one printed seed, output poisoning, bit-exact comparison.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/common/device_buffer.cuh"

namespace bitserve::cuda {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::absl::Status assert_ok_status_ = (expr);          \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

template <typename T>
inline DeviceBuffer<T> Alloc(int64_t n) {
  auto b = DeviceBuffer<T>::Create(n);
  if (!b.ok()) {
    ADD_FAILURE() << b.status();
    return DeviceBuffer<T>();
  }
  return std::move(b).value();
}

inline bool HaveCudaDevice() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return false;
  }
  return true;
}

// A table-driven op test that skips itself on a machine without a CUDA device.
template <typename Case>
class GpuOpTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  }
};

inline uint64_t BaseSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("BITSERVE_TEST_SEED");
    const uint64_t s = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::cout << "[ seed     ] BITSERVE_TEST_SEED=" << s << std::endl;
    return s;
  }();
  return seed;
}

// Output bytes are poisoned so that an element the kernel does not write cannot pass: floats
// become NaN, int32 0x7f7f7f7f (beyond any sum), int8 -128 (never produced by quantization).
inline constexpr unsigned char kPoisonFloat = 0xff, kPoisonInt32 = 0x7f, kPoisonInt8 = 0x80;

struct Rng {
  explicit Rng(uint64_t seed) : engine(seed) {}
  std::mt19937_64 engine;
  uint64_t Bits() { return engine(); }
  float Uniform(float lo, float hi) {
    return std::uniform_real_distribution<float>(lo, hi)(engine);
  }
  float Normal(float sd) { return std::normal_distribution<float>(0.0f, sd)(engine); }
};

template <typename T>
void ExpectBitExact(const std::vector<T>& gpu, const std::vector<T>& cpu, int64_t row_len,
                    const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  int64_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(T)) != 0) {
      if (bad < 5) {
        first << " [" << i / row_len << "][" << i % row_len << "] gpu " << +gpu[i] << " cpu "
              << +cpu[i] << ";";
      }
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << gpu.size() << " differ:" << first.str();
}

template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& d) {
  std::vector<T> h(d.size());
  EXPECT_TRUE(d.CopyToHost(h.data(), h.size()).ok());
  return h;
}

// Rows of a fused RMSNorm + quantization: identical normed rows must quantize identically; a row
// whose float64 sum rounded the variance to the neighbouring float (act_quant.cuh) may differ by
// one int8 step and must be within 1e-6 relative, at most max(1, m/16) such rows.
inline void ExpectNormQuantMatches(const std::vector<float>& g_normed,
                                   const std::vector<float>& normed, const std::vector<int8_t>& g_q,
                                   const std::vector<int8_t>& q_dense,
                                   const std::vector<float>& g_s, const std::vector<float>& s,
                                   int64_t m, int64_t dim, int64_t stride) {
  int64_t off_rows = 0;
  for (int64_t r = 0; r < m; ++r) {
    const bool same = std::memcmp(&g_normed[r * dim], &normed[r * dim], dim * sizeof(float)) == 0;
    for (int64_t i = dim; i < stride; ++i)
      ASSERT_EQ(g_q[r * stride + i], 0) << "padding, row " << r;
    if (same) {
      for (int64_t i = 0; i < dim; ++i) {
        ASSERT_EQ(g_q[r * stride + i], q_dense[r * dim + i]) << "row " << r << " col " << i;
      }
      ASSERT_EQ(std::memcmp(&g_s[r], &s[r], 4), 0) << "scale of row " << r;
      continue;
    }
    ++off_rows;
    double num = 0, den = 0;
    for (int64_t i = 0; i < dim; ++i) {
      ASSERT_FALSE(std::isnan(g_normed[r * dim + i])) << "row " << r << " col " << i;
      num += std::pow(double{g_normed[r * dim + i]} - normed[r * dim + i], 2);
      den += std::pow(double{normed[r * dim + i]}, 2);
      EXPECT_LE(std::abs(g_q[r * stride + i] - q_dense[r * dim + i]), 1) << "row " << r;
    }
    EXPECT_LE(std::sqrt(num / std::max(den, 1e-300)), 1e-6) << "RMSNorm row " << r;
  }
  EXPECT_LE(off_rows, std::max<int64_t>(1, m / 16)) << "too many rows off by the sum order";
}

}  // namespace bitserve::cuda
