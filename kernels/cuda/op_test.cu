// The CUDA op test harness: every case names its op and shapes, draws fresh random inputs from a
// printed seed, poisons the outputs, runs the GPU op and the CPU reference, and compares them:
// bit-exact for integer results and for floats the reference computes with the same operations,
// a stated relative error otherwise. Re-run a failure with BITSERVE_TEST_SEED=<printed seed>.
#include <cuda_runtime.h>

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
#include "kernels/cuda/act_quant.cuh"
#include "kernels/cuda/device_buffer.cuh"
#include "kernels/cuda/ternary_gemm.cuh"
#include "kernels/cuda/ternary_gemv.cuh"
#include "kernels/cuda/ternary_layout.h"

namespace bitserve::cuda {
namespace {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::absl::Status assert_ok_status_ = (expr);          \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

template <typename T>
DeviceBuffer<T> Alloc(int64_t n) {
  auto b = DeviceBuffer<T>::Create(n);
  if (!b.ok()) {
    ADD_FAILURE() << b.status();
    return DeviceBuffer<T>();
  }
  return std::move(b).value();
}

uint64_t BaseSeed() {
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
constexpr unsigned char kPoisonFloat = 0xff, kPoisonInt32 = 0x7f, kPoisonInt8 = 0x80;

enum class Op { kQuantize, kRmsNormQuantize, kGemv, kGemm, kQuantizeMatmul };
enum class ScaleKind { kAutoBitLinear, kBitLinear, kBitLinearPow2 };

struct OpCase {
  Op op;
  int64_t m, out, in;  // tokens; matrix [out, in] (dim = in for the quantizers)
  std::string config;  // GEMV configuration name; "" = the default choice
  ScaleKind scale = ScaleKind::kAutoBitLinear;

  std::string Name() const {
    static const char* kOps[] = {"quantize", "rmsnorm_quantize", "gemv", "gemm", "quantize_matmul"};
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
  // Widths for every launch shape of the register kernel, and 2562 for the any-width one.
  for (int64_t dim : {96, 200, 2560, 2562, 6912, 8192, 12288, 28672}) {
    for (int64_t m : {1, 7, 64, 65}) {
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
  // Float activations -> GPU quantization -> the dispatch point, against the CPU chain.
  for (const auto& [out, in] :
       {std::pair<int64_t, int64_t>{2560, 2560}, {13824, 2560}, {96, 200}, {200, 96}}) {
    for (int64_t m : {1, 16, 256}) {
      cases.push_back({Op::kQuantizeMatmul, m, out, in, "", ScaleKind::kBitLinear});
    }
  }
  return cases;
}

// ---- random inputs -----------------------------------------------------------------------

struct Rng {
  explicit Rng(uint64_t seed) : engine(seed) {}
  std::mt19937_64 engine;
  uint64_t Bits() { return engine(); }
  float Uniform(float lo, float hi) {
    return std::uniform_real_distribution<float>(lo, hi)(engine);
  }
  float Normal(float sd) { return std::normal_distribution<float>(0.0f, sd)(engine); }
};

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

// ---- comparisons -------------------------------------------------------------------------

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

class CudaOpTest : public ::testing::TestWithParam<OpCase> {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA device";
    }
  }
};

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

TEST(CudaOps, RejectsMisalignedStride) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_SKIP() << "no CUDA device";
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

}  // namespace
}  // namespace bitserve::cuda
