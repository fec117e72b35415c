#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/random_ternary.cuh"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/ternary/ternary_gemv_kernels.cuh"

namespace bitserve::cuda {
namespace {

using internal::ExpertGroupsArgs;
using internal::GemvDp4aKernel;
using internal::GemvMmaKernel;
using GemvArgs = internal::TernaryProductArgs;

using LaunchFn = cudaError_t (*)(const GemvArgs&, cudaStream_t);

template <int kM, int kWarps, int kUnroll>
cudaError_t LaunchDp4a(const GemvArgs& a, cudaStream_t stream) {
  return LaunchDependent(GemvDp4aKernel<kM, kWarps, kUnroll>, dim3(a.row_tiles), dim3(kWarps * 32),
                         0, stream, 1, a, ExpertGroupsArgs{});
}

template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
cudaError_t LaunchMma(const GemvArgs& a, cudaStream_t stream) {
  // Token blocks vary fastest, so the blocks that share a weight slice run together and all but
  // the first read it from L2.
  const dim3 grid((a.m + 8 * kNT - 1) / (8 * kNT), (a.row_tiles + kRT * kRW - 1) / (kRT * kRW));
  return LaunchDependent(GemvMmaKernel<kNT, kRT, kRW, kKS, kUnroll>, grid, dim3(kRT * kKS * 32), 0,
                         stream, 1, a, ExpertGroupsArgs{});
}

struct Entry {
  TernaryGemvConfig config;
  LaunchFn launch;
};

template <int kM, int kWarps, int kUnroll>
Entry Dp4aEntry() {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kDp4a;
  c.tokens = kM;
  c.row_tiles = 1;
  c.k_split = kWarps;
  c.unroll = kUnroll;
  return {c, &LaunchDp4a<kM, kWarps, kUnroll>};
}

template <int kNT, int kRT, int kRW, int kKS, int kUnroll>
Entry MmaEntry() {
  TernaryGemvConfig c;
  c.kind = TernaryGemvConfig::Kind::kMma;
  c.tokens = 8 * kNT;
  c.row_tiles = kRT;
  c.warp_row_tiles = kRW;
  c.k_split = kKS;
  c.unroll = kUnroll;
  return {c, &LaunchMma<kNT, kRT, kRW, kKS, kUnroll>};
}

const std::vector<Entry>& Entries() {
  static const std::vector<Entry>* entries = new std::vector<Entry>{
      // dp4a, exact token counts
      Dp4aEntry<1, 8, 4>(),
      Dp4aEntry<1, 8, 2>(),
      Dp4aEntry<1, 4, 4>(),
      Dp4aEntry<2, 8, 2>(),
      Dp4aEntry<3, 8, 1>(),
      Dp4aEntry<4, 8, 1>(),
      // mma <n-tiles, warps along rows, row tiles per warp, split-K warps, unroll>
      MmaEntry<1, 1, 1, 8, 4>(),
      MmaEntry<1, 1, 1, 8, 2>(),
      MmaEntry<1, 1, 1, 4, 4>(),
      MmaEntry<1, 1, 2, 8, 2>(),
      MmaEntry<2, 1, 1, 8, 4>(),
      MmaEntry<2, 1, 1, 8, 2>(),
      MmaEntry<2, 2, 1, 4, 4>(),
      MmaEntry<2, 1, 2, 8, 2>(),
      MmaEntry<2, 1, 4, 8, 1>(),
      MmaEntry<2, 1, 4, 4, 1>(),
      MmaEntry<4, 1, 2, 8, 1>(),
      MmaEntry<4, 1, 2, 4, 2>(),
      MmaEntry<4, 2, 2, 4, 1>(),
      MmaEntry<8, 1, 2, 4, 1>(),
  };
  return *entries;
}

}  // namespace

std::string TernaryGemvConfig::Name() const {
  if (kind == Kind::kDp4a) return absl::StrCat("dp4a_m", tokens, "_w", k_split, "_u", unroll);
  return absl::StrCat("mma_t", tokens, "_r", row_tiles, "x", warp_row_tiles, "_k", k_split, "_u",
                      unroll);
}

const std::vector<TernaryGemvConfig>& AllTernaryGemvConfigs() {
  static const std::vector<TernaryGemvConfig>* configs = [] {
    auto* v = new std::vector<TernaryGemvConfig>;
    for (const Entry& e : Entries()) v->push_back(e.config);
    return v;
  }();
  return *configs;
}

namespace {

constexpr auto Dp4a = &TernaryGemvConfig::Dp4a;
constexpr auto Mma = &TernaryGemvConfig::Mma;

}  // namespace

TernaryGemvConfig DefaultTernaryGemvConfig(const TernaryMatrixView& w, int64_t m) {
  // From bench/cuda/kernel_benchmark.cu (docs/perf.md). Shape traits decide:
  //   long_k: >= 48 k-tiles (6144+ inputs), so each of 8 split-K warps streams several tiles;
  //   many_rows: >= 8192 rows, enough blocks that fewer split-K warps per block win.
  // M = 1 and 2 (dp4a) and up to 8 tokens: H100, within 15% of the best compiled configuration
  // at every measured shape. 9 to 64 tokens: refitted on an H200 with `--products` (2B4T and 70B
  // shapes): few rows (<= 4,096) want 8-token blocks, so that the grid has enough blocks; 10,240+
  // rows want fewer split-K warps; within 10% of the best at 16 and 32 tokens except 3840x2560
  // at 32 (6.7 vs 5.4 us).
  const bool long_k = w.k_tiles() >= 48;
  const bool many_rows = w.row_tiles() >= 512;
  const bool few_rows = w.padded_rows <= 4096;
  const bool wide = w.padded_rows >= 10240;
  // M = 1, long_k stays at 2 tiles per batch: on the H200 kernel_benchmark (weights rotated,
  // back-to-back calls) preferred 4 for 70B down (18.1 vs 21.0 us) and o, but inside the engine's
  // decode step (ncu) the same change made them slower: o 7.2 -> 8.9 us, down 17.3 -> 18.6.
  if (m == 1) return long_k ? Dp4a(1, 8, 2) : (many_rows ? Dp4a(1, 4, 4) : Dp4a(1, 8, 4));
  if (m == 2 && long_k) return Dp4a(2, 8, 2);
  if (m <= 8) return (many_rows && !long_k) ? Mma(8, 1, 1, 4, 4) : Mma(8, 1, 1, 8, 2);
  if (few_rows && m <= 32) return Mma(8, 1, 1, 8, 2);
  if (m <= 16) {
    if (!long_k) return Mma(16, 1, 4, 8, 1);
    if (w.padded_rows >= 12288) return Mma(16, 1, 4, 4, 1);
    return wide ? Mma(16, 2, 1, 4, 4) : Mma(16, 1, 2, 8, 2);
  }
  if (m <= 32) {
    if (!long_k) return Mma(16, 1, 4, 4, 1);
    return wide ? Mma(32, 1, 2, 4, 2) : Mma(32, 1, 2, 8, 1);
  }
  if (w.k_tiles() >= 64) return wide ? Mma(32, 1, 2, 4, 2) : Mma(32, 2, 2, 4, 1);
  return many_rows ? Mma(16, 1, 4, 4, 1) : Mma(16, 2, 1, 4, 4);
}

absl::StatusOr<DeviceTernaryMatrix> DeviceTernaryMatrix::Upload(const PackedTernaryMatrix& packed) {
  DeviceTernaryMatrix m;
  auto words = DeviceBuffer<uint32_t>::Create(static_cast<int64_t>(packed.words.size()));
  if (!words.ok()) return words.status();
  m.words_ = std::move(words).value();
  if (absl::Status s = m.words_.CopyFromHost(packed.words.data(), packed.words.size()); !s.ok()) {
    return s;
  }
  m.view_ = PackedMatrixView(m.words_.get(), packed.rows, packed.cols, packed.scale);
  return m;
}

absl::StatusOr<DeviceTernaryMatrix> DeviceTernaryMatrix::Random(int64_t rows, int64_t cols,
                                                                TernaryOutputScale scale,
                                                                uint64_t seed) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("random ternary matrix [", rows, ", ", cols, "] is empty"));
  }
  DeviceTernaryMatrix m;
  auto words = DeviceBuffer<uint32_t>::Create(PaddedRows(rows) * PaddedInputs(cols) / 16);
  if (!words.ok()) return words.status();
  m.words_ = std::move(words).value();
  if (absl::Status s = FillRandomPackedTernary(m.words_.get(), rows, cols, seed, nullptr);
      !s.ok()) {
    return s;
  }
  m.view_ = PackedMatrixView(m.words_.get(), rows, cols, scale);
  return m;
}

absl::Status ValidateTernaryOperands(const TernaryMatrixView& w, const Int8Activations& x) {
  if (w.words == nullptr || w.rows <= 0 || w.cols <= 0 || w.padded_rows != PaddedRows(w.rows) ||
      w.padded_cols != PaddedInputs(w.cols)) {
    return absl::InvalidArgumentError(absl::StrCat("ternary matrix view is malformed: [", w.rows,
                                                   ", ", w.cols, "] padded [", w.padded_rows, ", ",
                                                   w.padded_cols, "]"));
  }
  if (w.padded_rows >= (int64_t{1} << 31) || w.padded_cols >= (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ternary matrix [", w.rows, ", ", w.cols, "] is too large for int32 sums"));
  }
  if (x.cols != w.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("activations have ", x.cols, " features, the matrix expects ", w.cols));
  }
  if (x.rows < 0 || x.rows >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat("bad token count ", x.rows));
  }
  if (x.stride < w.padded_cols || x.stride % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation stride ", x.stride, " must be a multiple of 16 and >= ", w.padded_cols,
        " (PaddedInputs(", w.cols, "))"));
  }
  if (reinterpret_cast<uintptr_t>(x.values) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.words) % 16 != 0) {
    return absl::InvalidArgumentError("ternary operands must be 16-byte aligned");
  }
  if (x.rows > 0 && (x.values == nullptr || x.scales == nullptr || x.sums == nullptr)) {
    return absl::InvalidArgumentError("activations need values, scales and sums");
  }
  return absl::OkStatus();
}

absl::Status TernaryGemvWithConfig(const TernaryGemvConfig& config, const TernaryMatrixView& w,
                                   const Int8Activations& x, float* y, int32_t* acc,
                                   cudaStream_t stream) {
  if (absl::Status s = ValidateTernaryOperands(w, x); !s.ok()) return s;
  if ((y == nullptr) == (acc == nullptr)) {
    return absl::InvalidArgumentError("ternary GEMV needs exactly one of the float/int32 outputs");
  }
  if (x.rows == 0) return absl::OkStatus();
  const Entry* entry = nullptr;
  for (const Entry& e : Entries()) {
    if (e.config == config) entry = &e;
  }
  if (entry == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ternary GEMV configuration ", config.Name(), " is not compiled in"));
  }
  if (config.kind == TernaryGemvConfig::Kind::kDp4a && config.tokens != x.rows) {
    return absl::InvalidArgumentError(absl::StrCat("configuration ", config.Name(),
                                                   " is for exactly ", config.tokens,
                                                   " tokens, got ", x.rows));
  }
  const GemvArgs a = internal::MakeTernaryProductArgs(w, x, y, acc);
  BITSERVE_CUDA_RETURN_IF_ERROR(entry->launch(a, stream));
  return absl::OkStatus();
}

absl::Status TernaryGemv(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                         cudaStream_t stream) {
  return TernaryGemvWithConfig(DefaultTernaryGemvConfig(w, x.rows), w, x, y, nullptr, stream);
}

absl::Status TernaryGemvInt32(const TernaryMatrixView& w, const Int8Activations& x, int32_t* acc,
                              cudaStream_t stream) {
  return TernaryGemvWithConfig(DefaultTernaryGemvConfig(w, x.rows), w, x, nullptr, acc, stream);
}

}  // namespace bitserve::cuda
