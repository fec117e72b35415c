#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/cublaslt_int8.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/head/int8_lm_head.cuh"
#include "kernels/cuda/norm/fused_norm_quantize.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kQuantizeThreads = 256;
constexpr int kGemvThreads = 256;
constexpr int kGemvVocabPerWarp = 2;  // vocabulary rows a warp streams at once

__device__ __forceinline__ float Bf16BitsToFloat(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// One block per (padded) vocabulary row: cpu::QuantizeBf16RowsInt8's operations.
__global__ void __launch_bounds__(kQuantizeThreads)
    QuantizeLmHeadKernel(const uint16_t* __restrict__ table, int vocab, int hidden, int stride,
                         int8_t* __restrict__ q, float* __restrict__ d) {
  __shared__ float scratch[kQuantizeThreads / 32];
  const int64_t row = blockIdx.x;
  int8_t* out = q + row * stride;
  if (row >= vocab) {
    for (int i = threadIdx.x; i < stride; i += kQuantizeThreads) out[i] = 0;
    return;
  }
  const uint16_t* w = table + row * hidden;
  float amax = 0.0f;
  for (int i = threadIdx.x; i < hidden; i += kQuantizeThreads) {
    amax = fmaxf(amax, fabsf(Bf16BitsToFloat(w[i])));
  }
  amax = internal::BlockAllReduce<kQuantizeThreads / 32>(amax, internal::MaxAbsOp{}, scratch);
  const float scale = amax > 0.0f ? __fdiv_rn(amax, 127.0f) : 1.0f;
  for (int i = threadIdx.x; i < stride; i += kQuantizeThreads) {
    float v = 0.0f;
    if (i < hidden)
      v = fminf(fmaxf(rintf(__fdiv_rn(Bf16BitsToFloat(w[i]), scale)), -127.0f), 127.0f);
    out[i] = static_cast<int8_t>(v);
  }
  if (threadIdx.x == 0) d[row] = scale;
}

// The rows that want logits, gathered through row_index, as the fused norm kernel's producer.
struct GatheredRows {
  const float* x;
  const int32_t* row_index;  // null: row r itself
  int dim;
  __device__ float4 Load(int64_t row, int i) const {
    const int64_t src = row_index != nullptr ? row_index[row] : row;
    return __ldg(reinterpret_cast<const float4*>(x + src * dim) + i);
  }
};

__device__ __forceinline__ float ScaleLogit(int32_t acc, float x_scale, float w_scale) {
  return __fmul_rn(__fdiv_rn(__int2float_rn(acc), x_scale), w_scale);
}

__device__ __forceinline__ int Dot16(const int4& a, const int4& b, int acc) {
  acc = __dp4a(a.x, b.x, acc);
  acc = __dp4a(a.y, b.y, acc);
  acc = __dp4a(a.z, b.z, acc);
  return __dp4a(a.w, b.w, acc);
}

// Each warp streams kGemvVocabPerWarp vocabulary rows of the int8 table (16 bytes a lane a step)
// against up to kRows token rows (read through L1: every warp reads the same few KB).
template <int kRows>
__global__ void __launch_bounds__(kGemvThreads)
    Int8LmHeadGemvKernel(const int8_t* __restrict__ w, const float* __restrict__ d, int vocab,
                         int stride, const int8_t* __restrict__ x, int64_t x_stride,
                         const float* __restrict__ x_scales, int rows, float* __restrict__ logits) {
  const int lane = threadIdx.x % 32;
  const int64_t v0 = (static_cast<int64_t>(blockIdx.x) * (kGemvThreads / 32) + threadIdx.x / 32) *
                     kGemvVocabPerWarp;
  const int chunks = stride / 16;
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  if (v0 >= vocab) return;
  int acc[kGemvVocabPerWarp][kRows] = {};
  for (int c = lane; c < chunks; c += 32) {
    int4 wv[kGemvVocabPerWarp];
#pragma unroll
    for (int j = 0; j < kGemvVocabPerWarp; ++j) {
      wv[j] = v0 + j < vocab ? __ldcs(reinterpret_cast<const int4*>(w + (v0 + j) * stride) + c)
                             : make_int4(0, 0, 0, 0);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < rows) {
        const int4 xv = __ldg(reinterpret_cast<const int4*>(x + r * x_stride) + c);
#pragma unroll
        for (int j = 0; j < kGemvVocabPerWarp; ++j) acc[j][r] = Dot16(wv[j], xv, acc[j][r]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kGemvVocabPerWarp; ++j) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        acc[j][r] += __shfl_xor_sync(0xffffffffu, acc[j][r], offset);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kGemvVocabPerWarp; ++j) {
      const int64_t v = v0 + j;
      if (v >= vocab) continue;
      const float dv = d[v];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < rows)
          logits[r * static_cast<int64_t>(vocab) + v] = ScaleLogit(acc[j][r], x_scales[r], dv);
      }
    }
  }
}

// logits[r, v] from the GEMM's int32 products [rows, ld].
__global__ void Int8LmHeadEpilogueKernel(const int32_t* __restrict__ products, int64_t ld,
                                         int vocab, int rows, const float* __restrict__ x_scales,
                                         const float* __restrict__ d, float* __restrict__ logits) {
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const float xs = x_scales[r];
    for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < vocab; v += gridDim.x * blockDim.x) {
      logits[r * static_cast<int64_t>(vocab) + v] = ScaleLogit(products[r * ld + v], xs, d[v]);
    }
  }
}

absl::Status CheckOperands(const Int8LmHeadWeights& w, const Int8Activations& x,
                           const float* logits, int64_t max_rows) {
  if (w.vocab <= 0 || w.hidden <= 0 || w.vocab > 0x7fffffff || w.values.get() == nullptr) {
    return absl::InvalidArgumentError("Int8LmHead: no quantized weights");
  }
  if (x.cols != w.hidden || x.stride < Int8LmHeadStride(w.hidden) || x.stride % 16 != 0 ||
      x.rows < 0 || x.rows > max_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8LmHead: ", x.rows, " rows of ", x.cols, " (stride ", x.stride, ") against a head of [",
        w.vocab, ", ", w.hidden, "] (at most ", max_rows, " rows)"));
  }
  if (x.rows > 0 && (x.values == nullptr || x.scales == nullptr || logits == nullptr)) {
    return absl::InvalidArgumentError("Int8LmHead: null operand");
  }
  return absl::OkStatus();
}

}  // namespace

int64_t Int8LmHeadPaddedVocab(int64_t vocab) { return (vocab + 15) / 16 * 16; }
int64_t Int8LmHeadStride(int64_t hidden) { return (hidden + 15) / 16 * 16; }

absl::StatusOr<Int8LmHeadWeights> QuantizeLmHeadInt8(const uint16_t* table, int64_t vocab,
                                                     int64_t hidden, cudaStream_t stream) {
  if (vocab <= 0 || hidden <= 0 || vocab > 0x7fffffff - 16 || hidden > (1 << 17) ||
      table == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizeLmHeadInt8: bad table [", vocab, ", ", hidden, "]"));
  }
  Int8LmHeadWeights w;
  w.vocab = vocab;
  w.hidden = hidden;
  const int64_t padded = Int8LmHeadPaddedVocab(vocab), stride = Int8LmHeadStride(hidden);
  ASSIGN_OR_RETURN(w.values, DeviceBuffer<int8_t>::Create(padded * stride));
  ASSIGN_OR_RETURN(w.scales, DeviceBuffer<float>::Create(vocab));
  QuantizeLmHeadKernel<<<static_cast<unsigned>(padded), kQuantizeThreads, 0, stream>>>(
      table, static_cast<int>(vocab), static_cast<int>(hidden), static_cast<int>(stride),
      w.values.get(), w.scales.get());
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return w;
}

absl::Status RmsNormQuantizeRows(const float* x, const int32_t* row_index, int64_t rows,
                                 int64_t dim, const float* weight, float eps,
                                 const Int8ActivationsOut& out, float* normed,
                                 cudaStream_t stream) {
  RETURN_IF_ERROR(internal::ValidateFusedRow("RmsNormQuantizeRows", rows, dim, out));
  Int8ActivationsOut no_sums = out;
  no_sums.sums = nullptr;
  return internal::LaunchFusedNormQuantize<true>(GatheredRows{x, row_index, static_cast<int>(dim)},
                                                 weight, rows, dim, eps, no_sums, normed, stream);
}

absl::StatusOr<std::unique_ptr<Int8LmHead>> Int8LmHead::Create(int64_t vocab, int64_t max_rows) {
  if (vocab <= 0 || max_rows <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8LmHead: vocab ", vocab, ", max_rows ", max_rows, " must be positive"));
  }
  std::unique_ptr<Int8LmHead> head(new Int8LmHead);
  head->max_rows_ = max_rows;
  if (max_rows > kMaxGemvRows) {
    ASSIGN_OR_RETURN(head->matmul_, CublasLtInt8Matmul::Create());
    ASSIGN_OR_RETURN(head->products_,
                     DeviceBuffer<int32_t>::Create(Int8LmHeadPaddedVocab(vocab) * max_rows));
  }
  return head;
}

Int8LmHead::~Int8LmHead() = default;

absl::Status Int8LmHead::Run(const Int8LmHeadWeights& w, const Int8Activations& x, float* logits,
                             cudaStream_t stream) {
  return x.rows <= kMaxGemvRows ? RunGemv(w, x, logits, stream) : RunGemm(w, x, logits, stream);
}

absl::Status Int8LmHead::RunGemv(const Int8LmHeadWeights& w, const Int8Activations& x,
                                 float* logits, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckOperands(w, x, logits, max_rows_));
  const int64_t stride = Int8LmHeadStride(w.hidden);
  const int64_t warps = (w.vocab + kGemvVocabPerWarp - 1) / kGemvVocabPerWarp;
  const dim3 grid(static_cast<unsigned>((warps + kGemvThreads / 32 - 1) / (kGemvThreads / 32)));
  for (int64_t r0 = 0; r0 < x.rows; r0 += kGemvPassRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kGemvPassRows, x.rows - r0));
    const int8_t* xv = x.values + r0 * x.stride;
    const float* xs = x.scales + r0;
    float* out = logits + r0 * w.vocab;
    cudaError_t launched;
#define BITSERVE_LAUNCH_GEMV(k)                                                               \
  launched = LaunchDependent(Int8LmHeadGemvKernel<k>, grid, dim3(kGemvThreads), 0, stream, 1, \
                             w.values.get(), w.scales.get(), static_cast<int>(w.vocab),       \
                             static_cast<int>(stride), xv, x.stride, xs, rows, out)
    if (rows == 1) {
      BITSERVE_LAUNCH_GEMV(1);
    } else if (rows == 2) {
      BITSERVE_LAUNCH_GEMV(2);
    } else if (rows <= 4) {
      BITSERVE_LAUNCH_GEMV(4);
    } else {
      BITSERVE_LAUNCH_GEMV(8);
    }
#undef BITSERVE_LAUNCH_GEMV
    BITSERVE_CUDA_RETURN_IF_ERROR(launched);
  }
  return absl::OkStatus();
}

absl::Status Int8LmHead::RunGemm(const Int8LmHeadWeights& w, const Int8Activations& x,
                                 float* logits, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckOperands(w, x, logits, max_rows_));
  if (x.rows == 0) return absl::OkStatus();
  if (matmul_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("Int8LmHead: made for ", max_rows_, " rows, too few for the GEMM path"));
  }
  if (reinterpret_cast<uintptr_t>(x.values) % 16 != 0) {
    return absl::InvalidArgumentError("Int8LmHead: activations must be 16-byte aligned");
  }
  const int64_t padded = Int8LmHeadPaddedVocab(w.vocab), stride = Int8LmHeadStride(w.hidden);
  RETURN_IF_ERROR(matmul_->Run(w.values.get(), padded, stride, x.values, x.rows, x.stride,
                               products_.get(), padded, stream));
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((w.vocab + 255) / 256, 1024)),
                  static_cast<unsigned>(std::min<int64_t>(x.rows, 65535)));
  Int8LmHeadEpilogueKernel<<<grid, 256, 0, stream>>>(
      products_.get(), padded, static_cast<int>(w.vocab), static_cast<int>(x.rows), x.scales,
      w.scales.get(), logits);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
