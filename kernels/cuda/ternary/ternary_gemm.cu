#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/cublaslt_int8.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_kernel_common.cuh"
#include "kernels/cuda/ternary/ternary_tiled_gemm.cuh"

namespace bitserve::cuda {
namespace {

using internal::kCodeMask;
using internal::ScaleOutput;

// One thread per packed uint4 (16 rows x 128 inputs per warp, ternary_layout.h): four 16-byte
// rows of int8 out. Codes become w = c - 1 with one byte-wise subtraction per 4 values; padding
// (past rows or cols) is written as 0 so that the product needs no knowledge of it.
__global__ void UnpackTernaryKernel(const uint4* __restrict__ packed, int64_t total_lanes,
                                    int k_tiles, int rows, int cols, int padded_cols,
                                    int8_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total_lanes;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tile = i / 32;
    const int lane = static_cast<int>(i % 32);
    const int row_tile = static_cast<int>(tile / k_tiles),
              k_tile = static_cast<int>(tile % k_tiles);
    const int g = lane >> 2, t = lane & 3;
    const uint4 w = __ldg(packed + i);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int row = row_tile * 16 + g + 8 * (s & 1);
      const int k0 = k_tile * 128 + 64 * (s >> 1) + 16 * t;
      uint4 v;
      v.x = __vsub4(words[s] & kCodeMask, 0x01010101u);
      v.y = __vsub4((words[s] >> 2) & kCodeMask, 0x01010101u);
      v.z = __vsub4((words[s] >> 4) & kCodeMask, 0x01010101u);
      v.w = __vsub4((words[s] >> 6) & kCodeMask, 0x01010101u);
      if (row >= rows) {
        v = make_uint4(0, 0, 0, 0);
      } else if (k0 + 16 > cols) {
        uint32_t* bytes4 = &v.x;
        for (int e = 0; e < 16; ++e) {
          if (k0 + e >= cols) bytes4[e / 4] &= ~(0xffu << (8 * (e % 4)));
        }
      }
      *reinterpret_cast<uint4*>(out + static_cast<int64_t>(row) * padded_cols + k0) = v;
    }
  }
}

// products [m, ld] int32 -> y or acc [m, rows], output features [row_begin, row_end).
__global__ void TernaryEpilogueKernel(const int32_t* __restrict__ products, int64_t ld, int rows,
                                      int row_begin, int row_end, int m,
                                      const float* __restrict__ x_scale, int mode, float value,
                                      float* __restrict__ y, int32_t* __restrict__ acc) {
  for (int tok = blockIdx.y; tok < m; tok += gridDim.y) {
    const float xs = x_scale != nullptr ? x_scale[tok] : 0.0f;
    for (int o = row_begin + blockIdx.x * blockDim.x + threadIdx.x; o < row_end;
         o += gridDim.x * blockDim.x) {
      const int v = products[tok * ld + o];
      const int64_t index = static_cast<int64_t>(tok) * rows + o;
      if (acc != nullptr) {
        acc[index] = v;
      } else {
        y[index] = ScaleOutput(v, xs, mode, value);
      }
    }
  }
}

int64_t Alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int64_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TernaryGemm>> TernaryGemm::Create(int64_t max_rows, int64_t max_cols,
                                                                 int64_t max_tokens) {
  if (max_rows <= 0 || max_cols <= 0 || max_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ternary GEMM limits must be positive, got ",
                                                   max_rows, " x ", max_cols, ", ", max_tokens,
                                                   " tokens"));
  }
  std::unique_ptr<TernaryGemm> gemm(new TernaryGemm);
  gemm->max_rows_ = PaddedRows(max_rows);
  gemm->max_cols_ = PaddedInputs(max_cols);
  gemm->max_tokens_ = max_tokens;
  auto matmul = CublasLtInt8Matmul::Create();
  if (!matmul.ok()) return matmul.status();
  gemm->matmul_ = std::move(matmul).value();
  auto unpacked = DeviceBuffer<int8_t>::Create(gemm->max_rows_ * gemm->max_cols_);
  if (!unpacked.ok()) return unpacked.status();
  gemm->unpacked_ = std::move(unpacked).value();
  auto products = DeviceBuffer<int32_t>::Create(gemm->max_rows_ * max_tokens);
  if (!products.ok()) return products.status();
  gemm->products_ = std::move(products).value();
  auto permuted = DeviceBuffer<int8_t>::Create(gemm->max_tokens_ * gemm->max_cols_);
  if (!permuted.ok()) return permuted.status();
  gemm->permuted_ = std::move(permuted).value();
  return gemm;
}

TernaryGemm::~TernaryGemm() = default;

int64_t TernaryGemm::scratch_bytes() const {
  return unpacked_.bytes() + products_.bytes() + matmul_->workspace_bytes() + permuted_.bytes();
}

absl::Status TernaryGemm::Multiply(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                                   int32_t* acc, cudaStream_t stream) {
  if (absl::Status s = ValidateTernaryOperands(w, x); !s.ok()) return s;
  if (w.padded_rows > max_rows_ || w.padded_cols > max_cols_ || x.rows > max_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ternary GEMM of [", w.rows, ", ", w.cols, "] x ", x.rows, " tokens exceeds the scratch (",
        max_rows_, " x ", max_cols_, ", ", max_tokens_, " tokens)"));
  }
  if (x.rows == 0) return absl::OkStatus();
  if (Alignment(x.values) < 16) {
    return absl::InvalidArgumentError("ternary GEMM activations must be 16-byte aligned");
  }
  // One product over all rows. (Row chunks whose epilogues overlap the next chunk's product on a
  // second stream were measured slower: 610 vs 550 us at 8192x8192, M = 4096.)
  const int64_t lanes = w.padded_rows * w.padded_cols / 64;
  const int unpack_blocks = static_cast<int>(std::min<int64_t>((lanes + 255) / 256, 132 * 16));
  UnpackTernaryKernel<<<unpack_blocks, 256, 0, stream>>>(
      reinterpret_cast<const uint4*>(w.words), lanes, static_cast<int>(w.k_tiles()),
      static_cast<int>(w.rows), static_cast<int>(w.cols), static_cast<int>(w.padded_cols),
      unpacked_.get());
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());

  RETURN_IF_ERROR(matmul_->Run(unpacked_.get(), w.padded_rows, w.padded_cols, x.values, x.rows,
                               x.stride, products_.get(), w.padded_rows, stream));

  const dim3 grid(static_cast<unsigned>((w.rows + 255) / 256),
                  static_cast<unsigned>(std::min<int64_t>(x.rows, 65535)));
  TernaryEpilogueKernel<<<grid, 256, 0, stream>>>(
      products_.get(), w.padded_rows, static_cast<int>(w.rows), 0, static_cast<int>(w.rows),
      static_cast<int>(x.rows), x.scales, static_cast<int>(w.scale.mode), w.scale.value, y, acc);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status TernaryGemm::Run(const TernaryMatrixView& w, const Int8Activations& x, float* y,
                              cudaStream_t stream) {
  if (y == nullptr) return absl::InvalidArgumentError("ternary GEMM: null output");
  return Multiply(w, x, y, nullptr, stream);
}

absl::Status TernaryGemm::RunInt32(const TernaryMatrixView& w, const Int8Activations& x,
                                   int32_t* acc, cudaStream_t stream) {
  if (acc == nullptr) return absl::InvalidArgumentError("ternary GEMM: null output");
  return Multiply(w, x, nullptr, acc, stream);
}

TernaryProductPath ChooseTernaryProductPath(const TernaryMatrixView& w, int64_t m, bool have_gemm) {
  // bench/cuda/kernel_benchmark.cu --products on an H200 (docs/perf.md). The GEMV kernels stream
  // the weights once and win while few tokens share them: below 128 tokens (64 from 12,288 rows,
  // 32 for the 70B gate/up's 57,344, 256 for long inputs into at most 4,096 rows). The tiled
  // kernels (mma.sync ~600-750 int8 TOPS, wgmma up to ~1,000, the unpacking fused) win from
  // there. Unpacking for cuBLASLt (~1,000-1,200 TOPS including the pass over the unpacked
  // weights) pays from 2,048 tokens, from 1,024 with long inputs (>= 6,144), and for long inputs
  // into few rows (the 2B4T down projection) from 256, where the tiled grid has fewer blocks than
  // the GPU has multiprocessors.
  const bool long_k = w.k_tiles() >= 48;
  const int64_t gemv_below = w.padded_rows >= 32768              ? 32
                             : w.padded_rows >= 12288            ? 64
                             : (long_k && w.padded_rows <= 4096) ? 256
                                                                 : 128;
  if (m < gemv_below) return TernaryProductPath::kGemv;
  if (have_gemm) {
    if (m >= 2048 || (long_k && m >= 1024) || (long_k && w.padded_rows <= 4096 && m >= 256)) {
      return TernaryProductPath::kCublas;
    }
  }
  return TernaryProductPath::kTiled;
}

namespace {

absl::Status Dispatch(TernaryGemm* gemm, const TernaryMatrixView& w, const Int8Activations& x,
                      float* y, int32_t* acc, cudaStream_t stream) {
  switch (ChooseTernaryProductPath(w, x.rows, gemm != nullptr)) {
    case TernaryProductPath::kGemv:
      return y != nullptr ? TernaryGemv(w, x, y, stream) : TernaryGemvInt32(w, x, acc, stream);
    case TernaryProductPath::kTiled: {
      // The wgmma scratch holds [x.rows, x.stride]; TernaryGemm sized it for its own limits.
      const bool fits =
          gemm != nullptr && x.rows <= gemm->max_tokens() && x.stride <= gemm->max_cols();
      return TernaryTiledMatmul(w, x, y, acc, stream, fits ? gemm->tiled_scratch() : nullptr);
    }
    case TernaryProductPath::kCublas:
      return y != nullptr ? gemm->Run(w, x, y, stream) : gemm->RunInt32(w, x, acc, stream);
  }
  return absl::InternalError("unknown ternary product path");
}

}  // namespace

absl::Status TernaryMatmul(TernaryGemm* gemm, const TernaryMatrixView& w, const Int8Activations& x,
                           float* y, cudaStream_t stream) {
  if (y == nullptr) return absl::InvalidArgumentError("ternary product: null output");
  return Dispatch(gemm, w, x, y, nullptr, stream);
}

absl::Status TernaryMatmulInt32(TernaryGemm* gemm, const TernaryMatrixView& w,
                                const Int8Activations& x, int32_t* acc, cudaStream_t stream) {
  if (acc == nullptr) return absl::InvalidArgumentError("ternary product: null output");
  return Dispatch(gemm, w, x, nullptr, acc, stream);
}

}  // namespace bitserve::cuda
