// HadamardRotateQk (kernels/cuda/attention/hadamard_rotate.cuh) against cpu::HadamardRotateRows in
// the CUDA op test harness (op_test_harness.cuh): random q and k with a few outlier channels, bit
// for bit, for head_dims whose Hadamard block is the whole head (32, 64, 128), three blocks (96)
// and the identity (an odd one), MHA and GQA shapes; rows of tokens past the device's count (a
// decode bucket's padding) must come back untouched.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cuda/attention/hadamard_rotate.cuh"
#include "kernels/cuda/op_test_harness.cuh"

namespace bitserve::cuda {
namespace {

struct RotateCase {
  std::string name;
  int tokens;         // rows of the buffers (the grid bound)
  int device_tokens;  // the count the kernel reads from the device; -1: no device count
  int heads, kv_heads, head_dim;
};

class HadamardRotateTest : public GpuOpTest<RotateCase> {};

TEST_P(HadamardRotateTest, BitExactAgainstCpu) {
  const RotateCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.name));
  const int64_t q_rows = int64_t{c.tokens} * c.heads, k_rows = int64_t{c.tokens} * c.kv_heads;
  std::vector<float> q(q_rows * c.head_dim), k(k_rows * c.head_dim);
  for (float& x : q) x = rng.Normal(1.0f);
  for (int64_t r = 0; r < k_rows; ++r) {
    for (int d = 0; d < c.head_dim; ++d) {
      // Keys with two outlier channels, as the rotation is meant for.
      const bool outlier = d == 1 || d == c.head_dim / 2;
      k[r * c.head_dim + d] = outlier ? 40.0f + rng.Normal(20.0f) : rng.Normal(1.0f);
    }
  }
  const int valid = c.device_tokens < 0 ? c.tokens : c.device_tokens;
  std::vector<float> q_want = q, k_want = k;
  cpu::HadamardRotateRows(q_want.data(), int64_t{valid} * c.heads, c.head_dim);
  cpu::HadamardRotateRows(k_want.data(), int64_t{valid} * c.kv_heads, c.head_dim);

  DeviceBuffer<float> d_q = Alloc<float>(q.size()), d_k = Alloc<float>(k.size());
  DeviceBuffer<int32_t> d_count = Alloc<int32_t>(1);
  ASSERT_OK(d_q.CopyFromHost(q.data(), q.size()));
  ASSERT_OK(d_k.CopyFromHost(k.data(), k.size()));
  ASSERT_OK(d_count.CopyFromHost(&c.device_tokens, 1));
  AttentionBatch batch;
  batch.num_tokens = c.tokens;
  batch.device_num_tokens = c.device_tokens < 0 ? nullptr : d_count.get();
  ASSERT_OK(
      HadamardRotateQk(d_q.get(), d_k.get(), c.heads, c.kv_heads, c.head_dim, batch, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_q), q_want, c.head_dim, "q");
  ExpectBitExact(Download(d_k), k_want, c.head_dim, "k");
}

std::vector<RotateCase> AllRotateCases() {
  std::vector<RotateCase> cases;
  for (int head_dim : {32, 64, 96, 128}) {
    for (auto [heads, kv_heads] : {std::pair{4, 4}, {8, 2}, {32, 8}}) {
      for (auto [tokens, device_tokens] : {std::pair{1, -1}, {7, -1}, {16, 5}, {9, 0}}) {
        cases.push_back({absl::StrCat("d", head_dim, "_h", heads, "_kv", kv_heads, "_t", tokens,
                                      device_tokens < 0 ? "" : absl::StrCat("_dev", device_tokens)),
                         tokens, device_tokens, heads, kv_heads, head_dim});
      }
    }
  }
  cases.push_back({"d256_h16_kv2_t3", 3, -1, 16, 2, 256});  // 18 rows over 5 chunks
  cases.push_back({"d80_h5_kv1_t4", 4, -1, 5, 1, 80});      // blocks of 16
  cases.push_back({"d7_h2_kv1_t3", 3, -1, 2, 1, 7});        // odd: the identity
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Attention, HadamardRotateTest, ::testing::ValuesIn(AllRotateCases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace bitserve::cuda
