#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_quant.cuh"
#include "kernels/cuda/cuda_check.cuh"

namespace bitserve::cuda {
namespace {

// Two kernels, one block per token, the same float operations in the same order:
//   QuantizeRowsInRegisters: width a multiple of 4 and at most 32768 (every model width): each
//     thread holds up to 8 float4 of the row, read once; the decode case (one token) is then one
//     memory round trip plus three block reductions, not three passes over the row.
//   QuantizeRowsKernel: any width; three passes, the later two from L1/L2.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

template <int kBlockWarps = kWarps, typename T, typename Op>
__device__ __forceinline__ T BlockReduce(T v, Op op, T* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kBlockWarps; ++w) v = op(v, scratch[w]);  // same order in every thread
  return v;
}

struct AddOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
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
    sum_sq = BlockReduce(sum_sq, AddOp{}, scratch_d);
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
  max_abs = BlockReduce(max_abs, MaxOp{}, scratch_f);
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
  if (sums != nullptr) sum = BlockReduce(sum, AddOp{}, scratch_i);
  if (threadIdx.x == 0) {
    scales[row] = s;
    if (sums != nullptr) sums[row] = sum;
  }
}

template <bool kNorm, int kBlock, int kVec>
__global__ void __launch_bounds__(kBlock)
    QuantizeRowsInRegisters(const float* __restrict__ x, const float* __restrict__ weight, int dim,
                            float eps, int8_t* __restrict__ q, int64_t stride,
                            float* __restrict__ scales, int32_t* __restrict__ sums,
                            float* __restrict__ normed) {
  constexpr int kBlockWarps = kBlock / 32;
  __shared__ double scratch_d[kBlockWarps];
  __shared__ float scratch_f[kBlockWarps];
  __shared__ int scratch_i[kBlockWarps];
  const int64_t row = blockIdx.x;
  const int dim4 = dim / 4;
  const float4* xr = reinterpret_cast<const float4*>(x + row * dim);
  float4 v[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int i = threadIdx.x + j * kBlock;
    v[j] = i < dim4 ? __ldg(xr + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  if constexpr (kNorm) {
    double sum_sq = 0.0;  // each x*x is exact in double, as on the CPU
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      sum_sq += static_cast<double>(v[j].x) * v[j].x + static_cast<double>(v[j].y) * v[j].y +
                static_cast<double>(v[j].z) * v[j].z + static_cast<double>(v[j].w) * v[j].w;
    }
    sum_sq = BlockReduce<kBlockWarps>(sum_sq, AddOp{}, scratch_d);
    const float variance = __double2float_rn(__ddiv_rn(sum_sq, static_cast<double>(dim)));
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
    // The weight is read only now (an L2 hit: every row shares it), so it holds no registers
    // through the reduction.
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int i = threadIdx.x + j * kBlock;
      const float4 wv = i < dim4 ? __ldg(reinterpret_cast<const float4*>(weight) + i)
                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      v[j].x = __fmul_rn(wv.x, __fmul_rn(v[j].x, inv));
      v[j].y = __fmul_rn(wv.y, __fmul_rn(v[j].y, inv));
      v[j].z = __fmul_rn(wv.z, __fmul_rn(v[j].z, inv));
      v[j].w = __fmul_rn(wv.w, __fmul_rn(v[j].w, inv));
      if (normed != nullptr && i < dim4) reinterpret_cast<float4*>(normed + row * dim)[i] = v[j];
    }
  }
  float max_abs = 0.0f;  // padding lanes hold 0, which never raises the max
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    max_abs = fmaxf(
        max_abs, fmaxf(fmaxf(fabsf(v[j].x), fabsf(v[j].y)), fmaxf(fabsf(v[j].z), fabsf(v[j].w))));
  }
  max_abs = BlockReduce<kBlockWarps>(max_abs, MaxOp{}, scratch_f);
  const float s = __fmul_rn(__frcp_rn(fmaxf(max_abs, 1e-5f)), 127.0f);

  auto quantize = [s](float f) {
    return static_cast<int>(fminf(fmaxf(rintf(__fmul_rn(f, s)), -128.0f), 127.0f));
  };
  int sum = 0;
  int8_t* qr = q + row * stride;
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int i = threadIdx.x + j * kBlock;
    if (i < dim4) {
      const int a = quantize(v[j].x), b = quantize(v[j].y), c = quantize(v[j].z),
                d = quantize(v[j].w);
      sum += a + b + c + d;
      reinterpret_cast<char4*>(qr)[i] =
          make_char4(static_cast<signed char>(a), static_cast<signed char>(b),
                     static_cast<signed char>(c), static_cast<signed char>(d));
    }
  }
  for (int64_t i = dim + threadIdx.x; i < stride; i += kBlock) qr[i] = 0;
  if (sums != nullptr) sum = BlockReduce<kBlockWarps>(sum, AddOp{}, scratch_i);
  if (threadIdx.x == 0) {
    scales[row] = s;
    if (sums != nullptr) sums[row] = sum;
  }
}

// Launches the register kernel when the width allows it; false otherwise.
template <bool kNorm>
bool LaunchInRegisters(const float* x, const float* weight, int64_t rows, int64_t dim, float eps,
                       const Int8ActivationsOut& out, float* normed, cudaStream_t stream) {
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       (weight == nullptr || reinterpret_cast<uintptr_t>(weight) % 16 == 0) &&
                       (normed == nullptr || reinterpret_cast<uintptr_t>(normed) % 16 == 0) &&
                       reinterpret_cast<uintptr_t>(out.values) % 4 == 0;
  if (dim % 4 != 0 || dim > 32768 || !aligned) return false;
  const int d4 = static_cast<int>(dim / 4);
  const unsigned grid = static_cast<unsigned>(rows);
  const int w = static_cast<int>(dim);
#define BITSERVE_LAUNCH_QUANTIZE(block, vec)                              \
  QuantizeRowsInRegisters<kNorm, block, vec><<<grid, block, 0, stream>>>( \
      x, weight, w, eps, out.values, out.stride, out.scales, out.sums, normed)
  if (d4 <= 256) {
    BITSERVE_LAUNCH_QUANTIZE(256, 1);
  } else if (d4 <= 1024) {
    BITSERVE_LAUNCH_QUANTIZE(1024, 1);
  } else if (d4 <= 2048) {
    BITSERVE_LAUNCH_QUANTIZE(1024, 2);
  } else if (d4 <= 4096) {
    BITSERVE_LAUNCH_QUANTIZE(1024, 4);
  } else {
    BITSERVE_LAUNCH_QUANTIZE(1024, 8);
  }
#undef BITSERVE_LAUNCH_QUANTIZE
  return true;
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
  if (LaunchInRegisters<false>(x, nullptr, rows, dim, 0.0f, out, nullptr, stream)) {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
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
  if (LaunchInRegisters<true>(x, weight, rows, dim, eps, out, normed, stream)) {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }
  QuantizeRowsKernel<true><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, weight, static_cast<int>(dim), eps, out.values, out.stride, out.scales, out.sums, normed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
