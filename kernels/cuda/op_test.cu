// The CUDA op test harness: every case names its op and shapes, draws fresh random inputs from a
// printed seed, poisons the outputs, runs the GPU op and the CPU reference, and compares them:
// bit-exact for integer results and for floats the reference computes with the same operations,
// a stated relative error otherwise. Re-run a failure with BITSERVE_TEST_SEED=<printed seed>.
// The paged attention cases are in paged_attention_op_test.cu (same binary, same harness).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/ternary_matmul.h"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/norm/act_quant.cuh"
#include "kernels/cuda/op_test_harness.cuh"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"
#include "kernels/cuda/ternary/ternary_tiled_gemm.cuh"
// The model's other ops (embedding, residual + norm, gated FFN, q/k/v + RoPE, LM head).
#include "base/bf16.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention/qkv_rope.cuh"
#include "kernels/cuda/head/embedding.cuh"
#include "kernels/cuda/head/lm_head.cuh"
#include "kernels/cuda/norm/gated_ffn.cuh"
#include "kernels/cuda/norm/residual_norm.cuh"

namespace bitserve::cuda {
namespace {

// ASSERT_OK, Alloc, BaseSeed, the poison bytes, Rng, ExpectBitExact, Download: op_test_harness.cuh

enum class Op { kQuantize, kRmsNormQuantize, kGemv, kGemm, kTiled, kQuantizeMatmul };
enum class ScaleKind { kAutoBitLinear, kBitLinear, kBitLinearPow2 };

struct OpCase {
  Op op;
  int64_t m, out, in;  // tokens; matrix [out, in] (dim = in for the quantizers)
  std::string config;  // GEMV or tiled configuration name; "" = the default choice
  ScaleKind scale = ScaleKind::kAutoBitLinear;

  std::string Name() const {
    static const char* kOps[] = {"quantize", "rmsnorm_quantize", "gemv", "gemm",
                                 "tiled",    "quantize_matmul"};
    static const char* kScales[] = {"", "_bitlinear", "_bitlinear_pow2"};
    std::string name = absl::StrCat(kOps[static_cast<int>(op)], "_m", m);
    if (op == Op::kQuantize || op == Op::kRmsNormQuantize) return absl::StrCat(name, "_dim", in);
    absl::StrAppend(&name, "_", out, "x", in, kScales[static_cast<int>(scale)]);
    if (!config.empty()) absl::StrAppend(&name, "_", config);
    return name;
  }
};

std::vector<OpCase> AllCases() {
  std::vector<OpCase> cases;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {2560, 2560}, {3840, 2560}, {13824, 2560}, {2560, 6912}, {96, 200}, {200, 96}};
  const std::vector<int64_t> token_counts = {1, 2, 7, 16, 64, 65, 256};
  // Widths for every launch shape of the register kernel, and 2562 for the any-width one; 16 and
  // 17 rows sit on both sides of the cluster bound (rows x 8 <= 132 multiprocessors on an H100 or
  // H200) for the widths above 4096.
  for (int64_t dim : {96, 200, 2560, 2562, 6912, 8192, 12288, 28672}) {
    for (int64_t m : {1, 7, 16, 17, 64, 65}) {
      cases.push_back({Op::kQuantize, m, 0, dim});
      cases.push_back({Op::kRmsNormQuantize, m, 0, dim});
    }
  }
  // Default GEMV choice and cuBLASLt GEMM at every shape and token count, rotating scale kinds.
  int rotate = 0;
  for (const auto& [out, in] : shapes) {
    for (int64_t m : token_counts) {
      const auto scale = static_cast<ScaleKind>(rotate++ % 3);
      cases.push_back({Op::kGemv, m, out, in, "", scale});
      if (m == 1 || m == 7 || m >= 64) cases.push_back({Op::kGemm, m, out, in, "", scale});
    }
  }
  // More than a thousand tokens through TernaryGemm.
  cases.push_back({Op::kGemm, 1100, 2560, 2560, "", ScaleKind::kBitLinear});
  cases.push_back({Op::kGemm, 1030, 3920, 2560, "", ScaleKind::kAutoBitLinear});
  // Every compiled GEMV configuration on the small and odd shapes.
  for (const TernaryGemvConfig& config : AllTernaryGemvConfigs()) {
    for (const auto& [out, in] : {std::pair<int64_t, int64_t>{96, 200}, {200, 96}, {2560, 2560}}) {
      if (config.kind == TernaryGemvConfig::Kind::kDp4a) {
        cases.push_back({Op::kGemv, config.tokens, out, in, config.Name()});
        continue;
      }
      for (int64_t m : {1, 7, 16, 65}) cases.push_back({Op::kGemv, m, out, in, config.Name()});
    }
  }
  // Every compiled tiled configuration: partial row and token blocks, one k-tile (96x200 is
  // two), tokens fewer than a block, the default choice, both scale forms.
  for (const TernaryTiledConfig& config : AllTernaryTiledConfigs()) {
    for (const auto& [out, in] :
         {std::pair<int64_t, int64_t>{96, 200}, {200, 96}, {2560, 2560}, {3920, 2560}}) {
      for (int64_t m : {1, 7, 64, 65, 130, 300}) {
        const auto scale = static_cast<ScaleKind>(rotate++ % 3);
        cases.push_back({Op::kTiled, m, out, in, config.Name(), scale});
      }
    }
  }
  for (int64_t m : {33, 64, 100, 256, 1000}) {
    cases.push_back({Op::kTiled, m, 2560, 6912, "", ScaleKind::kBitLinear});
    cases.push_back({Op::kTiled, m, 13824, 2560, "", ScaleKind::kAutoBitLinear});
  }
  // Float activations -> GPU quantization -> the dispatch point, against the CPU chain.
  for (const auto& [out, in] :
       {std::pair<int64_t, int64_t>{2560, 2560}, {13824, 2560}, {96, 200}, {200, 96}}) {
    for (int64_t m : {1, 16, 100, 256, 2100}) {
      cases.push_back({Op::kQuantizeMatmul, m, out, in, "", ScaleKind::kBitLinear});
    }
  }
  return cases;
}

// ---- random inputs -----------------------------------------------------------------------

std::vector<int8_t> RandomTernary(int64_t n, Rng& rng) {
  std::vector<int8_t> v(n);
  for (int64_t i = 0; i < n; i += 16) {
    uint64_t bits = rng.Bits();
    for (int64_t j = i; j < std::min(n, i + 16); ++j, bits >>= 4) {
      const int r = static_cast<int>(bits & 15);  // 6/16 zero, 5/16 each sign
      v[j] = static_cast<int8_t>(r < 6 ? 0 : (r < 11 ? 1 : -1));
    }
  }
  return v;
}

cpu::WeightScale RandomScale(ScaleKind kind, Rng& rng) {
  cpu::WeightScale s;
  s.divide = kind != ScaleKind::kAutoBitLinear;
  s.value = kind == ScaleKind::kBitLinearPow2 ? 0.25f : rng.Uniform(0.3f, 4.0f);
  return s;
}

// Activations with rows of very different magnitudes; row 0 (if m > 2) all zero, row 1 holds
// exact rounding ties (max 127 gives s = 1, values k + 0.5).
std::vector<float> RandomActivations(int64_t m, int64_t dim, Rng& rng) {
  std::vector<float> x(m * dim);
  for (int64_t r = 0; r < m; ++r) {
    const float sd = std::pow(10.0f, rng.Uniform(-3.0f, 2.0f));
    for (int64_t i = 0; i < dim; ++i) x[r * dim + i] = rng.Normal(sd);
  }
  if (m > 2) {
    for (int64_t i = 0; i < dim; ++i) x[i] = 0.0f;
    for (int64_t i = 0; i < dim; ++i) {
      x[dim + i] = static_cast<float>(static_cast<int>(rng.Bits() % 254) - 127) + 0.5f;
    }
    x[dim] = 127.0f;
  }
  return x;
}

// Host copy of int8 activations in the kernels' layout, plus what the references need.
struct HostActivations {
  int64_t m = 0, cols = 0, stride = 0;
  std::vector<int8_t> values;  // [m, stride]; bytes past cols random (must not matter)
  std::vector<int8_t> dense;   // [m, cols]
  std::vector<float> scales;
  std::vector<int32_t> sums;
};

HostActivations RandomInt8Activations(int64_t m, int64_t cols, Rng& rng) {
  HostActivations h;
  h.m = m;
  h.cols = cols;
  h.stride = PaddedInputs(cols);
  h.values.resize(m * h.stride);
  h.dense.resize(m * cols);
  h.scales.resize(m);
  h.sums.assign(m, 0);
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t i = 0; i < h.stride; ++i) {
      const auto v = static_cast<int8_t>(rng.Bits() & 0xff);  // full range, -128 included
      h.values[t * h.stride + i] = v;
      if (i < cols) {
        h.dense[t * cols + i] = v;
        h.sums[t] += v;
      }
    }
    h.scales[t] = 127.0f / rng.Uniform(0.01f, 30.0f);
  }
  return h;
}

struct DeviceActivations {
  DeviceBuffer<int8_t> values;
  DeviceBuffer<float> scales;
  DeviceBuffer<int32_t> sums;
  Int8Activations view;
};

void Upload(const HostActivations& h, DeviceActivations* d) {
  d->values = Alloc<int8_t>(h.m * h.stride);
  d->scales = Alloc<float>(h.m);
  d->sums = Alloc<int32_t>(h.m);
  ASSERT_OK(d->values.CopyFromHost(h.values.data(), h.values.size()));
  ASSERT_OK(d->scales.CopyFromHost(h.scales.data(), h.m));
  ASSERT_OK(d->sums.CopyFromHost(h.sums.data(), h.m));
  d->view.values = d->values.get();
  d->view.scales = d->scales.get();
  d->view.sums = d->sums.get();
  d->view.rows = h.m;
  d->view.cols = h.cols;
  d->view.stride = h.stride;
}

// Weights are the slow part to draw and pack; each shape and scale kind is drawn once per process
// (from the printed seed) and shared by that shape's cases. Activations are fresh per case.
struct TestMatrix {
  std::vector<int8_t> values;
  cpu::WeightScale scale;
  PackedTernaryMatrix packed;
  DeviceTernaryMatrix device;
};

const TestMatrix& GetMatrix(int64_t out, int64_t in, ScaleKind kind) {
  static auto* cache = new std::map<std::tuple<int64_t, int64_t, int>, std::unique_ptr<TestMatrix>>;
  auto& slot = (*cache)[{out, in, static_cast<int>(kind)}];
  if (slot == nullptr) {
    Rng rng(BaseSeed() ^ (static_cast<uint64_t>(out) << 40) ^ (static_cast<uint64_t>(in) << 8) ^
            static_cast<uint64_t>(kind));
    slot = std::make_unique<TestMatrix>();
    slot->values = RandomTernary(out * in, rng);
    slot->scale = RandomScale(kind, rng);
    auto packed = PackTernaryMatrix(slot->values.data(), out, in, slot->scale);
    EXPECT_TRUE(packed.ok()) << packed.status();
    slot->packed = std::move(packed).value();
    auto device = DeviceTernaryMatrix::Upload(slot->packed);
    EXPECT_TRUE(device.ok()) << device.status();
    slot->device = std::move(device).value();
  }
  return *slot;
}

// ---- the ops -----------------------------------------------------------------------------

void RunQuantize(const OpCase& c, Rng& rng, bool norm) {
  const int64_t m = c.m, dim = c.in, stride = PaddedInputs(dim);
  const std::vector<float> x = RandomActivations(m, dim, rng);
  std::vector<float> weight(dim);
  for (float& w : weight) w = rng.Uniform(0.2f, 2.5f);
  const float eps = 1e-5f;

  // CPU: (RMSNorm) then ActQuant; expected int8 in the padded layout, zeros past dim.
  std::vector<float> normed = x;
  if (norm) cpu::RmsNorm(x.data(), weight.data(), m, dim, eps, normed.data());
  std::vector<int8_t> q_dense(m * dim);
  std::vector<float> scales(m);
  cpu::ActQuantPerToken(normed.data(), m, dim, q_dense.data(), scales.data());
  std::vector<int8_t> q(m * stride, 0);
  std::vector<int32_t> sums(m, 0);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      q[r * stride + i] = q_dense[r * dim + i];
      sums[r] += q_dense[r * dim + i];
    }
  }

  auto d_x = Alloc<float>(m * dim);
  auto d_w = Alloc<float>(dim);
  auto d_q = Alloc<int8_t>(m * stride);
  auto d_s = Alloc<float>(m);
  auto d_sum = Alloc<int32_t>(m);
  auto d_normed = Alloc<float>(m * dim);
  ASSERT_OK(d_x.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(d_w.CopyFromHost(weight.data(), dim));
  ASSERT_OK(d_q.FillBytes(kPoisonInt8));
  ASSERT_OK(d_s.FillBytes(kPoisonFloat));
  ASSERT_OK(d_sum.FillBytes(kPoisonInt32));
  ASSERT_OK(d_normed.FillBytes(kPoisonFloat));
  Int8ActivationsOut out{d_q.get(), d_s.get(), d_sum.get(), stride};
  if (norm) {
    ASSERT_OK(RmsNormQuantizeActivations(d_x.get(), d_w.get(), m, dim, eps, out, d_normed.get(),
                                         nullptr));
  } else {
    ASSERT_OK(QuantizeActivations(d_x.get(), m, dim, out, nullptr));
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int8_t> g_q = Download(d_q);
  std::vector<float> g_s = Download(d_s);
  std::vector<int32_t> g_sum = Download(d_sum);
  if (!norm) {
    ExpectBitExact(g_q, q, stride, "int8 values");
    ExpectBitExact(g_s, scales, 1, "scales");
    ExpectBitExact(g_sum, sums, 1, "sums");
    return;
  }
  // RMSNorm: the float64 sum of squares is added in another order than on the CPU, so a row's
  // variance may round to the neighbouring float (rare). Rows whose normed output is bit-identical
  // must quantize bit-identically; any other row must be within 1e-6 relative (one float ulp is
  // 6e-8) and is reported.
  std::vector<float> g_normed = Download(d_normed);
  int64_t off_rows = 0;
  for (int64_t r = 0; r < m; ++r) {
    const bool same = std::memcmp(&g_normed[r * dim], &normed[r * dim], dim * sizeof(float)) == 0;
    if (same) {
      for (int64_t i = 0; i < stride; ++i) {
        ASSERT_EQ(g_q[r * stride + i], q[r * stride + i]) << "row " << r << " col " << i;
      }
      ASSERT_EQ(std::memcmp(&g_s[r], &scales[r], 4), 0) << "scale of row " << r;
      ASSERT_EQ(g_sum[r], sums[r]) << "sum of row " << r;
      continue;
    }
    ++off_rows;
    double num = 0, den = 0;
    for (int64_t i = 0; i < dim; ++i) {
      ASSERT_FALSE(std::isnan(g_normed[r * dim + i])) << "row " << r << " col " << i;
      num += std::pow(double{g_normed[r * dim + i]} - normed[r * dim + i], 2);
      den += std::pow(double{normed[r * dim + i]}, 2);
    }
    const double rel = std::sqrt(num / std::max(den, 1e-300));
    EXPECT_LE(rel, 1e-6) << "RMSNorm row " << r;
    for (int64_t i = 0; i < stride; ++i) {
      EXPECT_LE(std::abs(g_q[r * stride + i] - q[r * stride + i]), 1) << "row " << r;
    }
    std::cout << "[ note     ] row " << r << ": RMSNorm variance rounded to the neighbouring "
              << "float (relative error " << rel << ")" << std::endl;
  }
  EXPECT_LE(off_rows, std::max<int64_t>(1, m / 16)) << "too many rows off by the sum order";
}

// GPU ternary product with the case's path; exactly one of y / acc.
absl::Status RunTernary(const OpCase& c, const TernaryMatrixView& w, const Int8Activations& x,
                        TernaryGemm* gemm, float* y, int32_t* acc) {
  if (c.op == Op::kGemm)
    return y != nullptr ? gemm->Run(w, x, y, nullptr) : gemm->RunInt32(w, x, acc, nullptr);
  if (c.op == Op::kTiled) {
    auto scratch = DeviceBuffer<int8_t>::Create(TernaryTiledScratchBytes(x.rows, x.stride));
    if (!scratch.ok()) return scratch.status();
    if (c.config.empty()) return TernaryTiledMatmul(w, x, y, acc, nullptr, scratch->get());
    for (const TernaryTiledConfig& config : AllTernaryTiledConfigs()) {
      if (config.Name() == c.config) {
        return TernaryTiledMatmulWithConfig(config, w, x, y, acc, nullptr, scratch->get());
      }
    }
    return absl::NotFoundError(c.config);
  }
  if (c.config.empty()) {
    return y != nullptr ? TernaryGemv(w, x, y, nullptr) : TernaryGemvInt32(w, x, acc, nullptr);
  }
  for (const TernaryGemvConfig& config : AllTernaryGemvConfigs()) {
    if (config.Name() == c.config) return TernaryGemvWithConfig(config, w, x, y, acc, nullptr);
  }
  return absl::NotFoundError(c.config);
}

void RunProduct(const OpCase& c, Rng& rng) {
  const TestMatrix& w = GetMatrix(c.out, c.in, c.scale);
  const HostActivations hx = RandomInt8Activations(c.m, c.in, rng);
  DeviceActivations dx;
  Upload(hx, &dx);
  std::unique_ptr<TernaryGemm> gemm;
  if (c.op == Op::kGemm) {
    auto g = TernaryGemm::Create(c.out, c.in, c.m);
    ASSERT_OK(g.status());
    gemm = std::move(g).value();
  }

  std::vector<int32_t> ref_acc(c.m * c.out);
  cpu::TernaryMatmulInt32(hx.dense.data(), c.m, w.values.data(), c.out, c.in, ref_acc.data());
  auto d_acc = Alloc<int32_t>(c.m * c.out);
  ASSERT_OK(d_acc.FillBytes(kPoisonInt32));
  ASSERT_OK(RunTernary(c, w.device.view(), dx.view, gemm.get(), nullptr, d_acc.get()));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_acc), ref_acc, c.out, "int32 sums");

  // The float epilogue is the reference's two operations in the same order: bit-exact.
  std::vector<float> ref_y(c.m * c.out);
  cpu::TernaryMatmul(hx.dense.data(), hx.scales.data(), c.m, w.values.data(), c.out, c.in, w.scale,
                     ref_y.data());
  auto d_y = Alloc<float>(c.m * c.out);
  ASSERT_OK(d_y.FillBytes(kPoisonFloat));
  ASSERT_OK(RunTernary(c, w.device.view(), dx.view, gemm.get(), d_y.get(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_y), ref_y, c.out, "float outputs");
}

void RunQuantizeMatmul(const OpCase& c, Rng& rng) {
  const TestMatrix& w = GetMatrix(c.out, c.in, c.scale);
  const std::vector<float> x = RandomActivations(c.m, c.in, rng);
  std::vector<int8_t> q(c.m * c.in);
  std::vector<float> s(c.m);
  cpu::ActQuantPerToken(x.data(), c.m, c.in, q.data(), s.data());
  std::vector<float> ref_y(c.m * c.out);
  cpu::TernaryMatmul(q.data(), s.data(), c.m, w.values.data(), c.out, c.in, w.scale, ref_y.data());

  const int64_t stride = PaddedInputs(c.in);
  auto d_x = Alloc<float>(c.m * c.in);
  auto d_q = Alloc<int8_t>(c.m * stride);
  auto d_s = Alloc<float>(c.m);
  auto d_sum = Alloc<int32_t>(c.m);
  auto d_y = Alloc<float>(c.m * c.out);
  ASSERT_OK(d_x.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(d_q.FillBytes(kPoisonInt8));
  ASSERT_OK(d_y.FillBytes(kPoisonFloat));
  auto gemm = TernaryGemm::Create(c.out, c.in, c.m);
  ASSERT_OK(gemm.status());
  const Int8ActivationsOut out{d_q.get(), d_s.get(), d_sum.get(), stride};
  ASSERT_OK(QuantizeActivations(d_x.get(), c.m, c.in, out, nullptr));
  ASSERT_OK(TernaryMatmul(gemm->get(), w.device.view(), Int8Activations(out, c.m, c.in), d_y.get(),
                          nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_y), ref_y, c.out, "float outputs");
}

class CudaOpTest : public GpuOpTest<OpCase> {};

TEST_P(CudaOpTest, MatchesCpuReference) {
  const OpCase& c = GetParam();
  const uint64_t seed = BaseSeed() ^ std::hash<std::string>{}(c.Name());
  Rng rng(seed);
  switch (c.op) {
    case Op::kQuantize:
      RunQuantize(c, rng, /*norm=*/false);
      break;
    case Op::kRmsNormQuantize:
      RunQuantize(c, rng, /*norm=*/true);
      break;
    case Op::kGemv:
    case Op::kGemm:
    case Op::kTiled:
      RunProduct(c, rng);
      break;
    case Op::kQuantizeMatmul:
      RunQuantizeMatmul(c, rng);
      break;
  }
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaOpTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.Name();
                         });

// The dispatch takes the wgmma kernel where its grid fills the GPU (long inputs, >= 512 tokens)
// and passes it TernaryGemm's scratch; its result must equal the mma.sync kernel's bit for bit
// (both are checked against the CPU reference above on smaller shapes). A wgmma configuration
// without its scratch is refused.
TEST(CudaOps, DispatchTakesWgmmaWithScratch) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  if (!WgmmaAvailable()) GTEST_SKIP() << "no wgmma (needs sm_90a code on a 9.0 device)";
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  // One 256-row block per multiprocessor for 512 tokens (4 token blocks): a full wave.
  const int64_t out = 256 * ((sms + 3) / 4), in = 6144, m = 512;
  const TestMatrix& w = GetMatrix(out, in, ScaleKind::kBitLinear);
  ASSERT_TRUE(DefaultTernaryTiledConfig(w.device.view(), m, true).wgmma);
  ASSERT_EQ(ChooseTernaryProductPath(w.device.view(), m, true), TernaryProductPath::kTiled);
  Rng rng(BaseSeed());
  const HostActivations hx = RandomInt8Activations(m, in, rng);
  DeviceActivations dx;
  Upload(hx, &dx);
  auto gemm = TernaryGemm::Create(out, in, m);
  ASSERT_OK(gemm.status());
  auto via_dispatch = Alloc<float>(m * out);
  auto via_mma = Alloc<float>(m * out);
  ASSERT_OK(via_dispatch.FillBytes(kPoisonFloat));
  ASSERT_OK(via_mma.FillBytes(kPoisonFloat));
  ASSERT_OK(TernaryMatmul(gemm->get(), w.device.view(), dx.view, via_dispatch.get(), nullptr));
  ASSERT_OK(TernaryTiledMatmulWithConfig(DefaultTernaryTiledConfig(w.device.view(), m, false),
                                         w.device.view(), dx.view, via_mma.get(), nullptr,
                                         nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(via_dispatch), Download(via_mma), out, "wgmma vs mma.sync");

  const TernaryTiledConfig wgmma = DefaultTernaryTiledConfig(w.device.view(), m, true);
  EXPECT_EQ(TernaryTiledMatmulWithConfig(wgmma, w.device.view(), dx.view, via_mma.get(), nullptr,
                                         nullptr, /*wgmma_scratch=*/nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaOps, RejectsMisalignedStride) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  const TestMatrix& w = GetMatrix(96, 200, ScaleKind::kAutoBitLinear);
  Int8Activations x;
  x.rows = 1;
  x.cols = 200;
  x.stride = 200;  // < PaddedInputs(200) = 256
  auto buffer = Alloc<int8_t>(256);
  auto scales = Alloc<float>(1);
  auto sums = Alloc<int32_t>(1);
  x.values = buffer.get();
  x.scales = scales.get();
  x.sums = sums.get();
  auto y = Alloc<float>(96);
  EXPECT_EQ(TernaryGemv(w.device.view(), x, y.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- the model's other ops (embedding, residual + norm, gated FFN, q/k/v epilogue + RoPE, LM
// head): one case struct of their own so that this section stays apart from the ternary cases.

enum class ModelOp { kEmbedding, kResidualNorm, kGatedFfn, kQkvRope, kLmHead };

struct ModelOpCase {
  ModelOp op;
  int64_t m;
  int64_t a, b = 0, c = 0;   // embedding: dim; residual: dim; gated: inter; qkv_rope: heads,
                             // kv_heads, head_dim; lm_head: hidden, vocab
  bool scaled_rope = false;  // qkv_rope: RoPE-scaled frequencies and a cos/sin factor (YaRN-like)
  std::string Name() const {
    static const char* kNames[] = {"embedding", "residual_norm", "gated_ffn", "qkv_rope",
                                   "lm_head"};
    std::string name = absl::StrCat(kNames[static_cast<int>(op)], "_m", m, "_", a);
    if (b > 0) absl::StrAppend(&name, "x", b);
    if (c > 0) absl::StrAppend(&name, "x", c);
    if (scaled_rope) absl::StrAppend(&name, "_scaled");
    return name;
  }
};

std::vector<ModelOpCase> AllModelOpCases() {
  std::vector<ModelOpCase> cases;
  for (int64_t m : {1, 7, 65, 300}) {
    for (int64_t dim : {96, 100, 2560, 8192}) cases.push_back({ModelOp::kEmbedding, m, dim});
  }
  for (int64_t m : {1, 7, 65, 300}) {
    for (int64_t dim : {96, 200, 2560, 6912, 8192})
      cases.push_back({ModelOp::kResidualNorm, m, dim});
    for (int64_t inter : {200, 320, 6912, 28672}) cases.push_back({ModelOp::kGatedFfn, m, inter});
    for (auto [h, kv, d] : {std::tuple<int64_t, int64_t, int64_t>{4, 2, 32},
                            {3, 3, 32},
                            {20, 5, 128},
                            {64, 8, 128}}) {
      cases.push_back({ModelOp::kQkvRope, m, h, kv, d});
    }
    cases.push_back({ModelOp::kQkvRope, m, 8, 2, 128, /*scaled_rope=*/true});
    if (m == 300) continue;  // prefill-sized: one block per row again; the LM head has its own
    for (auto [hidden, vocab] :
         {std::pair<int64_t, int64_t>{96, 777}, {128, 1024}, {2560, 32000}}) {
      cases.push_back({ModelOp::kLmHead, m, hidden, vocab});
    }
  }
  return cases;
}

std::vector<uint16_t> RandomBf16(int64_t n, float sd, Rng& rng) {
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = FloatToBf16(rng.Normal(sd));
  return v;
}

void RunEmbedding(const ModelOpCase& c, Rng& rng) {
  const int64_t vocab = 1000, dim = c.a;
  const std::vector<uint16_t> table = RandomBf16(vocab * dim, 1.0f, rng);
  std::vector<int32_t> ids(c.m);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.Bits() % vocab);
  ids[0] = vocab - 1;
  std::vector<float> ref(c.m * dim);
  cpu::Bf16GatherRows(table.data(), dim, ids.data(), c.m, ref.data());
  auto d_table = Alloc<uint16_t>(vocab * dim);
  auto d_ids = Alloc<int32_t>(c.m);
  auto d_out = Alloc<float>(c.m * dim);
  ASSERT_OK(d_table.CopyFromHost(table.data(), table.size()));
  ASSERT_OK(d_ids.CopyFromHost(ids.data(), c.m));
  ASSERT_OK(d_out.FillBytes(kPoisonFloat));
  ASSERT_OK(EmbeddingLookup(d_table.get(), dim, d_ids.get(), c.m, d_out.get(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_out), ref, dim, "embedding rows");
}

void RunResidualNorm(const ModelOpCase& c, Rng& rng) {
  const int64_t m = c.m, dim = c.a, stride = PaddedInputs(dim);
  std::vector<float> x = RandomActivations(m, dim, rng), y = RandomActivations(m, dim, rng);
  std::vector<float> weight(dim);
  for (float& w : weight) w = rng.Uniform(0.2f, 2.5f);
  const float eps = 1e-5f;
  std::vector<float> sum = x, normed(m * dim), s(m);
  std::vector<int8_t> q(m * dim);
  cpu::AddInPlace(sum.data(), y.data(), m * dim);
  cpu::RmsNorm(sum.data(), weight.data(), m, dim, eps, normed.data());
  cpu::ActQuantPerToken(normed.data(), m, dim, q.data(), s.data());

  auto d_x = Alloc<float>(m * dim);
  auto d_y = Alloc<float>(m * dim);
  auto d_w = Alloc<float>(dim);
  auto d_q = Alloc<int8_t>(m * stride);
  auto d_s = Alloc<float>(m);
  auto d_sum = Alloc<int32_t>(m);
  auto d_normed = Alloc<float>(m * dim);
  ASSERT_OK(d_x.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(d_y.CopyFromHost(y.data(), y.size()));
  ASSERT_OK(d_w.CopyFromHost(weight.data(), dim));
  ASSERT_OK(d_q.FillBytes(kPoisonInt8));
  ASSERT_OK(d_s.FillBytes(kPoisonFloat));
  ASSERT_OK(d_normed.FillBytes(kPoisonFloat));
  const Int8ActivationsOut out{d_q.get(), d_s.get(), d_sum.get(), stride};
  ASSERT_OK(AddRmsNormQuantize(d_x.get(), d_y.get(), d_w.get(), m, dim, eps, out, d_normed.get(),
                               nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_x), sum, dim, "residual sum");
  ExpectNormQuantMatches(Download(d_normed), normed, Download(d_q), q, Download(d_s), s, m, dim,
                         stride);
  // The plain add.
  ASSERT_OK(d_x.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(AddResidual(d_x.get(), d_y.get(), m * dim, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_x), sum, dim, "AddResidual");
}

void RunGatedFfn(const ModelOpCase& c, Rng& rng) {
  const int64_t m = c.m, inter = c.a, stride = PaddedInputs(inter);
  std::vector<int32_t> acc(m * 2 * inter);
  for (int32_t& a : acc) a = static_cast<int32_t>(rng.Bits() % 40001) - 20000;
  std::vector<float> xs(m);
  for (float& x : xs) x = 127.0f / rng.Uniform(0.01f, 30.0f);
  const TernaryOutputScale gs = FoldWeightScale({rng.Uniform(0.3f, 4.0f), false});
  const TernaryOutputScale us = FoldWeightScale({rng.Uniform(0.3f, 4.0f), true});
  std::vector<float> weight(inter);
  for (float& w : weight) w = rng.Uniform(0.2f, 2.5f);
  const float eps = 1e-6f;
  std::vector<float> g(m * inter), u(m * inter), f(m * inter), normed(m * inter), s(m);
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t o = 0; o < inter; ++o) {
      g[t * inter + o] = ApplyTernaryOutputScale(acc[t * 2 * inter + o], xs[t], gs);
      u[t * inter + o] = ApplyTernaryOutputScale(acc[t * 2 * inter + inter + o], xs[t], us);
    }
  }
  cpu::Relu2Mul(g.data(), u.data(), m * inter, f.data());
  cpu::RmsNorm(f.data(), weight.data(), m, inter, eps, normed.data());
  std::vector<int8_t> q(m * inter);
  cpu::ActQuantPerToken(normed.data(), m, inter, q.data(), s.data());

  auto d_acc = Alloc<int32_t>(m * 2 * inter);
  auto d_xs = Alloc<float>(m);
  auto d_w = Alloc<float>(inter);
  auto d_q = Alloc<int8_t>(m * stride);
  auto d_s = Alloc<float>(m);
  auto d_normed = Alloc<float>(m * inter);
  ASSERT_OK(d_acc.CopyFromHost(acc.data(), acc.size()));
  ASSERT_OK(d_xs.CopyFromHost(xs.data(), m));
  ASSERT_OK(d_w.CopyFromHost(weight.data(), inter));
  ASSERT_OK(d_q.FillBytes(kPoisonInt8));
  ASSERT_OK(d_s.FillBytes(kPoisonFloat));
  ASSERT_OK(d_normed.FillBytes(kPoisonFloat));
  const Int8ActivationsOut out{d_q.get(), d_s.get(), nullptr, stride};
  ASSERT_OK(GateUpRelu2NormQuantize(d_acc.get(), d_xs.get(), gs, us, m, inter, d_w.get(), eps, out,
                                    d_normed.get(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNormQuantMatches(Download(d_normed), normed, Download(d_q), q, Download(d_s), s, m, inter,
                         stride);
}

void RunQkvRope(const ModelOpCase& c, Rng& rng) {
  const QkvShape shape{static_cast<int>(c.a), static_cast<int>(c.b), static_cast<int>(c.c)};
  const int64_t m = c.m, qd = shape.q_dim(), kvd = shape.kv_dim(), cols = shape.rows();
  const int64_t max_positions = 4096;
  std::vector<int32_t> acc(m * cols), positions(m);
  for (int32_t& a : acc) a = static_cast<int32_t>(rng.Bits() % 40001) - 20000;
  for (int32_t& p : positions) p = static_cast<int32_t>(rng.Bits() % max_positions);
  positions[0] = static_cast<int32_t>(max_positions - 1);
  std::vector<float> xs(m);
  for (float& x : xs) x = 127.0f / rng.Uniform(0.01f, 30.0f);
  const TernaryOutputScale qs = FoldWeightScale({rng.Uniform(0.3f, 4.0f), false});
  const TernaryOutputScale ks = FoldWeightScale({0.25f, true});
  const TernaryOutputScale vs = FoldWeightScale({rng.Uniform(0.3f, 4.0f), true});
  std::vector<float> q(m * qd), k(m * kvd), v(m * kvd);
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t o = 0; o < qd; ++o)
      q[t * qd + o] = ApplyTernaryOutputScale(acc[t * cols + o], xs[t], qs);
    for (int64_t o = 0; o < kvd; ++o) {
      k[t * kvd + o] = ApplyTernaryOutputScale(acc[t * cols + qd + o], xs[t], ks);
      v[t * kvd + o] = ApplyTernaryOutputScale(acc[t * cols + qd + kvd + o], xs[t], vs);
    }
  }
  std::vector<float> inv_freq = cpu::RopeInverseFrequencies(shape.head_dim, 500000.0);
  float attention_scaling = 1.0f;
  if (c.scaled_rope) {
    // Any frequencies and multiplier go through the table (runtime/checkpoint/rope_scaling.h
    // makes the real ones): the slow half interpolated by 4, cos and sin scaled as YaRN's 4x.
    for (size_t i = inv_freq.size() / 2; i < inv_freq.size(); ++i) inv_freq[i] /= 4.0f;
    attention_scaling = static_cast<float>(0.1 * std::log(4.0) + 1.0);
  }
  cpu::RopeNeox(q.data(), m, shape.heads, shape.head_dim, positions.data(), inv_freq.data(),
                attention_scaling);
  cpu::RopeNeox(k.data(), m, shape.kv_heads, shape.head_dim, positions.data(), inv_freq.data(),
                attention_scaling);

  const std::vector<float> table = RopeCosSinTable(inv_freq, max_positions, attention_scaling);
  auto d_acc = Alloc<int32_t>(m * cols);
  auto d_xs = Alloc<float>(m);
  auto d_pos = Alloc<int32_t>(m);
  auto d_table = Alloc<float>(static_cast<int64_t>(table.size()));
  auto d_q = Alloc<float>(m * qd);
  auto d_k = Alloc<float>(m * kvd);
  auto d_v = Alloc<float>(m * kvd);
  ASSERT_OK(d_acc.CopyFromHost(acc.data(), acc.size()));
  ASSERT_OK(d_xs.CopyFromHost(xs.data(), m));
  ASSERT_OK(d_pos.CopyFromHost(positions.data(), m));
  ASSERT_OK(d_table.CopyFromHost(table.data(), table.size()));
  ASSERT_OK(d_q.FillBytes(kPoisonFloat));
  ASSERT_OK(d_k.FillBytes(kPoisonFloat));
  ASSERT_OK(d_v.FillBytes(kPoisonFloat));
  ASSERT_OK(QkvEpilogueRope(d_acc.get(), d_xs.get(), qs, ks, vs, m, shape, d_pos.get(),
                            d_table.get(), max_positions, d_q.get(), d_k.get(), d_v.get(),
                            nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectBitExact(Download(d_q), q, qd, "q");
  ExpectBitExact(Download(d_k), k, kvd, "k");
  ExpectBitExact(Download(d_v), v, kvd, "v");

  // The same epilogue writing a bf16 paged cache (QkvEpilogueRopeWriteBf16Kv), as a decode bucket
  // runs it: m entries of one token each (token t at cache position 5 of entry t's one block, a
  // shuffled block id), 3 padding tokens past the device count. Expected: q as above for the m
  // tokens; each token's k and v rounded to bf16 in its cache row; every other byte untouched.
  const int64_t bound = m + 3, bs = 16, blocks = m + 4;
  std::vector<int32_t> acc_b(bound * cols, 0), pos_b(bound, 0), ids(blocks);
  std::copy(acc.begin(), acc.end(), acc_b.begin());
  std::copy(positions.begin(), positions.end(), pos_b.begin());
  std::vector<float> xs_b(bound, 1.0f);
  std::copy(xs.begin(), xs.end(), xs_b.begin());
  for (int64_t b = 0; b < blocks; ++b) ids[b] = static_cast<int32_t>(b);
  std::shuffle(ids.begin(), ids.end(), rng.engine);
  std::vector<int32_t> token_begin(bound + 1), start(bound, 5), token_entry(bound), tables(bound);
  for (int64_t t = 0; t <= bound; ++t) token_begin[t] = static_cast<int32_t>(t);
  for (int64_t t = 0; t < bound; ++t) {
    token_entry[t] = t < m ? static_cast<int32_t>(t) : 0x7f7f7f7f;  // garbage past the count
    tables[t] = ids[t];
  }
  const int32_t counts[2] = {static_cast<int32_t>(m), static_cast<int32_t>(m)};
  std::vector<uint16_t> k_cache(blocks * bs * kvd, 0xffff), v_cache = k_cache;
  std::vector<uint16_t> k_expect = k_cache, v_expect = v_cache;
  for (int64_t t = 0; t < m; ++t) {
    const int64_t row = static_cast<int64_t>(ids[t]) * bs + 5;
    for (int64_t i = 0; i < kvd; ++i) {
      k_expect[row * kvd + i] = FloatToBf16(k[t * kvd + i]);
      v_expect[row * kvd + i] = FloatToBf16(v[t * kvd + i]);
    }
  }
  auto d_acc_b = Alloc<int32_t>(bound * cols);
  auto d_xs_b = Alloc<float>(bound);
  auto d_pos_b = Alloc<int32_t>(bound);
  auto d_q_b = Alloc<float>(bound * qd);
  auto d_kc = Alloc<uint16_t>(static_cast<int64_t>(k_cache.size()));
  auto d_vc = Alloc<uint16_t>(static_cast<int64_t>(v_cache.size()));
  auto d_tb = Alloc<int32_t>(bound + 1);
  auto d_start = Alloc<int32_t>(bound);
  auto d_te = Alloc<int32_t>(bound);
  auto d_tables = Alloc<int32_t>(bound);
  auto d_counts = Alloc<int32_t>(2);
  ASSERT_OK(d_acc_b.CopyFromHost(acc_b.data(), acc_b.size()));
  ASSERT_OK(d_xs_b.CopyFromHost(xs_b.data(), bound));
  ASSERT_OK(d_pos_b.CopyFromHost(pos_b.data(), bound));
  ASSERT_OK(d_q_b.FillBytes(kPoisonFloat));
  ASSERT_OK(d_kc.CopyFromHost(k_cache.data(), k_cache.size()));
  ASSERT_OK(d_vc.CopyFromHost(v_cache.data(), v_cache.size()));
  ASSERT_OK(d_tb.CopyFromHost(token_begin.data(), bound + 1));
  ASSERT_OK(d_start.CopyFromHost(start.data(), bound));
  ASSERT_OK(d_te.CopyFromHost(token_entry.data(), bound));
  ASSERT_OK(d_tables.CopyFromHost(tables.data(), bound));
  ASSERT_OK(d_counts.CopyFromHost(counts, 2));
  AttentionBatch batch;
  batch.num_entries = static_cast<int>(bound);
  batch.num_tokens = static_cast<int>(bound);
  batch.token_begin = d_tb.get();
  batch.start_position = d_start.get();
  batch.token_entry = d_te.get();
  batch.block_tables = d_tables.get();
  batch.max_blocks_per_seq = 1;
  batch.max_context = 6;
  batch.device_num_entries = d_counts.get();
  batch.device_num_tokens = d_counts.get() + 1;
  const PagedKvLayer cache{d_kc.get(),           d_vc.get(),     static_cast<int>(blocks),
                           static_cast<int>(bs), shape.kv_heads, shape.head_dim};
  ASSERT_OK(QkvEpilogueRopeWriteBf16Kv(d_acc_b.get(), d_xs_b.get(), qs, ks, vs, shape,
                                       d_pos_b.get(), d_table.get(), max_positions, d_q_b.get(),
                                       batch, cache, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> q_b = Download(d_q_b);
  q_b.resize(m * qd);
  ExpectBitExact(q_b, q, qd, "q (cache-writing epilogue)");
  std::vector<uint16_t> kc = Download(d_kc), vc = Download(d_vc);
  ASSERT_EQ(std::memcmp(kc.data(), k_expect.data(), kc.size() * 2), 0) << "K cache bytes";
  ASSERT_EQ(std::memcmp(vc.data(), v_expect.data(), vc.size() * 2), 0) << "V cache bytes";
  // Not a bf16 cache, or another head shape: refused.
  PagedKvLayer int8_cache = cache;
  int8_cache.dtype = KvDtype::kInt8;
  EXPECT_EQ(QkvEpilogueRopeWriteBf16Kv(d_acc_b.get(), d_xs_b.get(), qs, ks, vs, shape,
                                       d_pos_b.get(), d_table.get(), max_positions, d_q_b.get(),
                                       batch, int8_cache, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

void RunLmHead(const ModelOpCase& c, Rng& rng) {
  const int64_t m = c.m, hidden = c.a, vocab = c.b, rows_in = m + 3;
  const std::vector<float> x = RandomActivations(rows_in, hidden, rng);
  std::vector<int32_t> index(m);
  for (int64_t r = 0; r < m; ++r) index[r] = static_cast<int32_t>((r * 5 + 2) % rows_in);
  std::vector<float> weight(hidden);
  for (float& w : weight) w = rng.Uniform(0.2f, 2.5f);
  const std::vector<uint16_t> table = RandomBf16(vocab * hidden, 0.05f, rng);
  const float eps = 1e-5f;
  std::vector<float> gathered(m * hidden), normed(m * hidden), rounded(m * hidden);
  for (int64_t r = 0; r < m; ++r) {
    std::copy_n(x.data() + index[r] * hidden, hidden, gathered.data() + r * hidden);
  }
  cpu::RmsNorm(gathered.data(), weight.data(), m, hidden, eps, normed.data());
  std::vector<uint16_t> bf(m * hidden);
  for (int64_t i = 0; i < m * hidden; ++i) {
    bf[i] = FloatToBf16(normed[i]);
    rounded[i] = Bf16ToFloat(bf[i]);
  }
  std::vector<float> ref(m * vocab), ref_rounded(m * vocab);
  cpu::Bf16Matmul(normed.data(), m, table.data(), vocab, hidden, ref.data());
  cpu::Bf16Matmul(rounded.data(), m, table.data(), vocab, hidden, ref_rounded.data());

  auto d_x = Alloc<float>(rows_in * hidden);
  auto d_index = Alloc<int32_t>(m);
  auto d_w = Alloc<float>(hidden);
  auto d_table = Alloc<uint16_t>(vocab * hidden);
  auto d_bf = Alloc<uint16_t>(m * hidden);
  auto d_normed = Alloc<float>(m * hidden);
  auto d_logits = Alloc<float>(m * vocab);
  ASSERT_OK(d_x.CopyFromHost(x.data(), x.size()));
  ASSERT_OK(d_index.CopyFromHost(index.data(), m));
  ASSERT_OK(d_w.CopyFromHost(weight.data(), hidden));
  ASSERT_OK(d_table.CopyFromHost(table.data(), table.size()));
  ASSERT_OK(d_bf.FillBytes(0xff));
  ASSERT_OK(d_normed.FillBytes(kPoisonFloat));
  ASSERT_OK(d_logits.FillBytes(kPoisonFloat));
  auto head = Bf16LmHead::Create(nullptr);
  ASSERT_OK(head.status());
  ASSERT_OK(RmsNormToBf16(d_x.get(), d_index.get(), m, hidden, d_w.get(), eps, d_bf.get(),
                          d_normed.get(), nullptr));
  ASSERT_OK((*head)->Run(d_table.get(), vocab, hidden, d_bf.get(), m, d_logits.get(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> g_normed = Download(d_normed);
  const std::vector<uint16_t> g_bf = Download(d_bf);
  const std::vector<float> g = Download(d_logits);
  for (int64_t r = 0; r < m; ++r) {
    if (std::memcmp(&g_normed[r * hidden], &normed[r * hidden], hidden * 4) == 0) {
      EXPECT_EQ(std::memcmp(&g_bf[r * hidden], &bf[r * hidden], hidden * 2), 0) << "row " << r;
    }
    double e_rounded = 0, e_float = 0, den = 0;
    for (int64_t o = 0; o < vocab; ++o) {
      ASSERT_FALSE(std::isnan(g[r * vocab + o])) << "row " << r << " logit " << o;
      e_rounded += std::pow(double{g[r * vocab + o]} - ref_rounded[r * vocab + o], 2);
      e_float += std::pow(double{g[r * vocab + o]} - ref[r * vocab + o], 2);
      den += std::pow(double{ref[r * vocab + o]}, 2);
    }
    // Same bf16 operands: only the float32 summation order differs.
    EXPECT_LE(std::sqrt(e_rounded / std::max(den, 1e-30)), 1e-5)
        << "row " << r << " vs the rounded activation";
    // Against the float activation: the bf16 rounding of the activation (lm_head.cuh).
    EXPECT_LE(std::sqrt(e_float / std::max(den, 1e-30)), 1e-2)
        << "row " << r << " vs cpu::Bf16Matmul";
  }
}

class CudaModelOpTest : public GpuOpTest<ModelOpCase> {};

TEST_P(CudaModelOpTest, MatchesCpuReference) {
  const ModelOpCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.Name()));
  switch (c.op) {
    case ModelOp::kEmbedding:
      RunEmbedding(c, rng);
      break;
    case ModelOp::kResidualNorm:
      RunResidualNorm(c, rng);
      break;
    case ModelOp::kGatedFfn:
      RunGatedFfn(c, rng);
      break;
    case ModelOp::kQkvRope:
      RunQkvRope(c, rng);
      break;
    case ModelOp::kLmHead:
      RunLmHead(c, rng);
      break;
  }
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(ModelOps, CudaModelOpTest, ::testing::ValuesIn(AllModelOpCases()),
                         [](const ::testing::TestParamInfo<ModelOpCase>& info) {
                           return info.param.Name();
                         });

}  // namespace
}  // namespace bitserve::cuda
