#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/norm/act_quant.cuh"
#include "kernels/cuda/norm/fused_norm_quantize.cuh"

namespace bitserve::cuda {
namespace {

// Two kernels, one block per token, the same float operations in the same order:
//   the register kernel of fused_norm_quantize.cuh (width a multiple of 4 and at most 32768: every
//     model width), fed by RowLoader: each thread holds up to 8 float4 of the row, read once, so
//     the decode case (one token) is one memory round trip plus three block reductions;
//   QuantizeRowsKernel: any width; three passes, the later two from L1/L2.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

using internal::BlockAllReduce;
using internal::MaxAbsOp;
using internal::SumOp;

// The rows of x as the register kernel's producer.
struct RowLoader {
  const float* x;
  int dim;
  __device__ float4 Load(int64_t row, int i) const {
    return __ldg(reinterpret_cast<const float4*>(x + row * dim) + i);
  }
};

template <bool kNorm>
__global__ void __launch_bounds__(kThreads)
    QuantizeRowsKernel(const float* __restrict__ x, const float* __restrict__ weight, int dim,
                       float eps, int8_t* __restrict__ q, int64_t stride,
                       float* __restrict__ scales, int32_t* __restrict__ sums,
                       float* __restrict__ normed) {
  __shared__ double scratch_d[kWarps];
  __shared__ float scratch_f[kWarps];
  __shared__ int scratch_i[kWarps];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * dim;

  float inv = 1.0f;
  if constexpr (kNorm) {
    double sum_sq = 0.0;  // each x*x is exact in double, as on the CPU
    for (int i = threadIdx.x; i < dim; i += kThreads) {
      const double v = xr[i];
      sum_sq += v * v;
    }
    sum_sq = BlockAllReduce<kWarps>(sum_sq, SumOp{}, scratch_d);
    const float variance = __double2float_rn(__ddiv_rn(sum_sq, static_cast<double>(dim)));
    inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
  }
  // The normed value is recomputed in the quantizing pass: the same two roundings give the same
  // float, and it saves holding the row.
  auto value = [&](int i) {
    if constexpr (kNorm) return __fmul_rn(weight[i], __fmul_rn(xr[i], inv));
    return xr[i];
  };

  float max_abs = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    const float v = value(i);
    if (normed != nullptr) normed[row * dim + i] = v;
    max_abs = fmaxf(max_abs, fabsf(v));
  }
  max_abs = BlockAllReduce<kWarps>(max_abs, MaxAbsOp{}, scratch_f);
  // torch's `127 / t` is `t.reciprocal() * 127`: two roundings, kept as such.
  const float s = __fmul_rn(__frcp_rn(fmaxf(max_abs, 1e-5f)), 127.0f);

  int sum = 0;
  int8_t* qr = q + row * stride;
  for (int i = threadIdx.x; i < stride; i += kThreads) {
    int v = 0;
    if (i < dim) {
      // rintf rounds half to even, as torch.round and the CPU's nearbyint do.
      const float r = rintf(__fmul_rn(value(i), s));
      v = static_cast<int>(fminf(fmaxf(r, -128.0f), 127.0f));
      sum += v;
    }
    qr[i] = static_cast<int8_t>(v);
  }
  if (sums != nullptr) sum = BlockAllReduce<kWarps>(sum, SumOp{}, scratch_i);
  if (threadIdx.x == 0) {
    scales[row] = s;
    if (sums != nullptr) sums[row] = sum;
  }
}

// Whether the register kernel takes these rows: width and alignment.
bool FitsRegisterKernel(const float* x, const float* weight, int64_t dim,
                        const Int8ActivationsOut& out, const float* normed) {
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       (weight == nullptr || reinterpret_cast<uintptr_t>(weight) % 16 == 0) &&
                       (normed == nullptr || reinterpret_cast<uintptr_t>(normed) % 16 == 0) &&
                       reinterpret_cast<uintptr_t>(out.values) % 4 == 0;
  return dim % 4 == 0 && dim <= 32768 && aligned;
}

absl::Status Validate(int64_t rows, int64_t dim, const Int8ActivationsOut& out) {
  if (rows < 0 || dim <= 0 || dim > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation quantization: bad shape [", rows, ", ", dim, "]"));
  }
  if (out.stride < dim || out.stride % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("activation quantization: stride ", out.stride,
                                                   " must be >= dim ", dim,
                                                   " and a multiple of 16"));
  }
  if (rows > 0 && (out.values == nullptr || out.scales == nullptr)) {
    return absl::InvalidArgumentError("activation quantization: null output");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeActivations(const float* x, int64_t rows, int64_t dim,
                                 const Int8ActivationsOut& out, cudaStream_t stream) {
  if (absl::Status s = Validate(rows, dim, out); !s.ok()) return s;
  if (rows == 0) return absl::OkStatus();
  if (FitsRegisterKernel(x, nullptr, dim, out, nullptr)) {
    return internal::LaunchFusedNormQuantize<false>(RowLoader{x, static_cast<int>(dim)}, nullptr,
                                                    rows, dim, 0.0f, out, nullptr, stream);
  }
  QuantizeRowsKernel<false><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, nullptr, static_cast<int>(dim), 0.0f, out.values, out.stride, out.scales, out.sums,
      nullptr);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status RmsNormQuantizeActivations(const float* x, const float* weight, int64_t rows,
                                        int64_t dim, float eps, const Int8ActivationsOut& out,
                                        float* normed, cudaStream_t stream) {
  if (absl::Status s = Validate(rows, dim, out); !s.ok()) return s;
  if (rows == 0) return absl::OkStatus();
  if (FitsRegisterKernel(x, weight, dim, out, normed)) {
    return internal::LaunchFusedNormQuantize<true>(RowLoader{x, static_cast<int>(dim)}, weight,
                                                   rows, dim, eps, out, normed, stream);
  }
  QuantizeRowsKernel<true><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, weight, static_cast<int>(dim), eps, out.values, out.stride, out.scales, out.sums, normed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
