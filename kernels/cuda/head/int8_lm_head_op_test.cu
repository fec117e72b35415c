// kernels/cuda/head/int8_lm_head.cuh against the CPU reference, in the CUDA op test harness:
//   - the quantized table and its scales bit for bit (cpu::QuantizeBf16RowsInt8), padding zero;
//   - the gathered final norm + per-token quantization (cpu::RmsNorm + cpu::ActQuantPerToken, as
//     the other fused norms: identical normed rows quantize identically);
//   - the logits bit for bit (cpu::Int8MatmulRowScales of the GPU's own int8 rows), through the
//     GEMV (1 and 2 rows by default; 3, 6 and 17 rows forced: its 4- and 8-row passes) and the
//     cuBLASLt GEMM (3+ rows), for widths
//     and vocabularies that are and are not multiples of 16, a row of zeros in the table, and the
//     real 2B4T shape through both paths.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/bf16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/ternary_matmul.h"
#include "kernels/cuda/head/int8_lm_head.cuh"
#include "kernels/cuda/op_test_harness.cuh"

namespace bitserve::cuda {
namespace {

enum class HeadPath { kAuto, kGemv, kGemm };

struct HeadCase {
  int64_t vocab, hidden, rows;
  HeadPath path;
  std::string Name() const {
    static const char* kPaths[] = {"auto", "gemv", "gemm"};
    return absl::StrCat("vocab", vocab, "_hidden", hidden, "_rows", rows, "_",
                        kPaths[static_cast<int>(path)]);
  }
};

std::vector<HeadCase> AllHeadCases() {
  std::vector<HeadCase> cases;
  for (auto [vocab, hidden] :
       {std::pair<int64_t, int64_t>{100, 96}, {1000, 100}, {4099, 256}, {32003, 2560}}) {
    for (int64_t rows : {1, 2, 3, 5, 8, 9, 33, 300}) {
      cases.push_back({vocab, hidden, rows, HeadPath::kAuto});
    }
    for (int64_t rows : {3, 6, 17}) {  // the GEMV's 4- and 8-row passes; 17: passes of 8, 8, 1
      cases.push_back({vocab, hidden, rows, HeadPath::kGemv});
    }
    cases.push_back({vocab, hidden, 4, HeadPath::kGemm});  // the GEMM at few rows
  }
  cases.push_back({128256, 2560, 1, HeadPath::kAuto});  // bitnet-2b4t: the GEMV
  cases.push_back({128256, 2560, 9, HeadPath::kAuto});  // and the GEMM
  return cases;
}

class Int8LmHeadOpTest : public GpuOpTest<HeadCase> {};

TEST_P(Int8LmHeadOpTest, MatchesCpuReference) {
  const HeadCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.Name()));
  const int64_t vocab = c.vocab, h = c.hidden, m = c.rows, rows_in = m + 3;
  const int64_t padded = Int8LmHeadPaddedVocab(vocab), stride = Int8LmHeadStride(h);
  // Uniform values of a row-dependent range, four from each 64-bit draw: a 128,256 x 2,560 table
  // in well under a second (std::normal_distribution took ~30 s of the test on the GPU host).
  std::vector<uint16_t> table(vocab * h);
  for (int64_t v = 0; v < vocab; ++v) {
    const float range = 0.04f * (1 + v % 7);  // rows of different ranges
    for (int64_t i = 0; i < h; i += 4) {
      uint64_t bits = rng.Bits();
      for (int64_t j = i; j < std::min(i + 4, h); ++j, bits >>= 16) {
        const float u = static_cast<float>(bits & 0xffff) / 32768.0f - 1.0f;
        table[v * h + j] = FloatToBf16(range * u);
      }
    }
  }
  for (int64_t i = 0; i < h; ++i) table[(vocab / 2) * h + i] = 0;  // a row of zeros: scale 1
  std::vector<float> x(rows_in * h), norm_weight(h);
  for (float& f : x) f = rng.Normal(3.0f);
  for (float& f : norm_weight) f = rng.Uniform(0.2f, 2.5f);
  std::vector<int32_t> index(m);
  for (int64_t r = 0; r < m; ++r) index[r] = static_cast<int32_t>((r * 5 + 2) % rows_in);
  const float eps = 1e-5f;

  // The CPU reference.
  std::vector<int8_t> q_ref(vocab * stride);
  std::vector<float> d_ref(vocab);
  cpu::QuantizeBf16RowsInt8(table.data(), vocab, h, q_ref.data(), stride, d_ref.data());
  std::vector<float> gathered(m * h), normed(m * h), s_ref(m);
  std::vector<int8_t> xq_ref(m * h);
  for (int64_t r = 0; r < m; ++r) std::copy_n(x.data() + index[r] * h, h, gathered.data() + r * h);
  cpu::RmsNorm(gathered.data(), norm_weight.data(), m, h, eps, normed.data());
  cpu::ActQuantPerToken(normed.data(), m, h, xq_ref.data(), s_ref.data());

  // The GPU.
  auto d_table = Alloc<uint16_t>(table.size());
  auto d_x = Alloc<float>(x.size());
  auto d_index = Alloc<int32_t>(m);
  auto d_norm = Alloc<float>(h);
  auto d_xq = Alloc<int8_t>(m * stride);
  auto d_s = Alloc<float>(m);
  auto d_normed = Alloc<float>(m * h);
  auto d_logits = Alloc<float>(m * vocab);
  ASSERT_OK(d_table.CopyFromHost(table.data(), table.size()));
  ASSERT_OK(d_x.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(d_index.CopyFromHost(index.data(), m));
  ASSERT_OK(d_norm.CopyFromHost(norm_weight.data(), h));
  ASSERT_OK(d_xq.FillBytes(kPoisonInt8));
  ASSERT_OK(d_s.FillBytes(kPoisonFloat));
  ASSERT_OK(d_logits.FillBytes(kPoisonFloat));
  auto w = QuantizeLmHeadInt8(d_table.get(), vocab, h, nullptr);
  ASSERT_OK(w.status());
  ASSERT_OK(RmsNormQuantizeRows(d_x.get(), d_index.get(), m, h, d_norm.get(), eps,
                                {d_xq.get(), d_s.get(), nullptr, stride}, d_normed.get(), nullptr));
  auto head = Int8LmHead::Create(vocab, std::max<int64_t>(m, 9));
  ASSERT_OK(head.status());
  const Int8Activations xa({d_xq.get(), d_s.get(), nullptr, stride}, m, h);
  switch (c.path) {
    case HeadPath::kAuto:
      ASSERT_OK((*head)->Run(*w, xa, d_logits.get(), nullptr));
      break;
    case HeadPath::kGemv:
      ASSERT_OK((*head)->RunGemv(*w, xa, d_logits.get(), nullptr));
      break;
    case HeadPath::kGemm:
      ASSERT_OK((*head)->RunGemm(*w, xa, d_logits.get(), nullptr));
      break;
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  // The table: every row, the vocabulary padding zero.
  const std::vector<int8_t> g_q = Download(w->values);
  ASSERT_EQ(static_cast<int64_t>(g_q.size()), padded * stride);
  ExpectBitExact(std::vector<int8_t>(g_q.begin(), g_q.begin() + vocab * stride), q_ref, stride,
                 "quantized table");
  for (int64_t i = vocab * stride; i < padded * stride; ++i) ASSERT_EQ(g_q[i], 0) << "pad " << i;
  ExpectBitExact(Download(w->scales), d_ref, vocab, "table scales");
  EXPECT_EQ(d_ref[vocab / 2], 1.0f);

  // The rows: as the other fused norms.
  const std::vector<int8_t> g_xq = Download(d_xq);
  const std::vector<float> g_s = Download(d_s);
  ExpectNormQuantMatches(Download(d_normed), normed, g_xq, xq_ref, g_s, s_ref, m, h, stride);

  // The logits of the GPU's own int8 rows, bit for bit.
  std::vector<int8_t> g_xq_dense(m * h);
  for (int64_t r = 0; r < m; ++r) std::copy_n(&g_xq[r * stride], h, &g_xq_dense[r * h]);
  std::vector<float> logits_ref(m * vocab);
  std::vector<int8_t> q_dense(vocab * h);
  for (int64_t v = 0; v < vocab; ++v) std::copy_n(&q_ref[v * stride], h, &q_dense[v * h]);
  cpu::Int8MatmulRowScales(g_xq_dense.data(), g_s.data(), m, q_dense.data(), vocab, h, d_ref.data(),
                           logits_ref.data());
  ExpectBitExact(Download(d_logits), logits_ref, vocab, "logits");
}

INSTANTIATE_TEST_SUITE_P(Int8LmHead, Int8LmHeadOpTest, ::testing::ValuesIn(AllHeadCases()),
                         [](const ::testing::TestParamInfo<HeadCase>& info) {
                           return info.param.Name();
                         });

TEST(Int8LmHeadOpTest, RefusesBadOperands) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  auto d_table = Alloc<uint16_t>(64 * 32);
  ASSERT_OK(d_table.FillBytes(0));
  EXPECT_FALSE(QuantizeLmHeadInt8(d_table.get(), 0, 32, nullptr).ok());
  auto w = QuantizeLmHeadInt8(d_table.get(), 64, 32, nullptr);
  ASSERT_OK(w.status());
  // A head for at most the GEMV's rows: it has no GEMM path.
  auto head = Int8LmHead::Create(64, Int8LmHead::kMaxGemvRows);
  ASSERT_OK(head.status());
  auto d_xq = Alloc<int8_t>(16 * 32);
  auto d_s = Alloc<float>(16);
  auto d_logits = Alloc<float>(16 * 64);
  // Width mismatch, too many rows, and the GEMM on a head made for GEMV rows only.
  const absl::Status width = (*head)->Run(
      *w, Int8Activations({d_xq.get(), d_s.get(), nullptr, 32}, 1, 48), d_logits.get(), nullptr);
  EXPECT_FALSE(width.ok());
  EXPECT_NE(width.message().find("against a head of [64, 32]"), std::string::npos) << width;
  EXPECT_FALSE((*head)
                   ->Run(*w,
                         Int8Activations({d_xq.get(), d_s.get(), nullptr, 32},
                                         Int8LmHead::kMaxGemvRows + 1, 32),
                         d_logits.get(), nullptr)
                   .ok());
  EXPECT_FALSE((*head)
                   ->RunGemm(*w, Int8Activations({d_xq.get(), d_s.get(), nullptr, 32}, 2, 32),
                             d_logits.get(), nullptr)
                   .ok());
}

}  // namespace
}  // namespace bitserve::cuda
