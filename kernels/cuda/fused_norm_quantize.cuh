// Device-side RMSNorm + per-token int8 quantization of one row held in registers, for kernels that
// produce the row themselves (a residual add, the gated FFN activation) and quantize it in the same
// pass, and for act_quant.cu's rows read from memory. The float operations and their order are the
// CPU reference's (kernels/cpu/rms_norm.h + act_quant.h); only the float64 sum of squares is added
// in another order than on the CPU (see act_quant.cuh for what that can change: rarely one ulp of
// the variance).
//
// A Producer is a small struct passed by value with
//   __device__ float4 Load(int64_t row, int i) const;   // elements 4i .. 4i+3 of the row
// called exactly once per (row, i) with i < dim / 4, so it may also store (the residual add does).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/int8_activations.h"

namespace bitserve::cuda::internal {

// All threads get the same result: each warp reduces, then every warp reduces the warp results
// with the same butterfly (a op b == b op a exactly for + and max, so every lane of every warp
// ends with identical bits). `identity` fills lanes past the block's warps.
template <int kBlockWarps, typename T, typename Op>
__device__ __forceinline__ T BlockAllReduce(T v, Op op, T* scratch, T identity = T{}) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kBlockWarps ? scratch[lane] : identity;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxAbsOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <int kBlock, int kVec, bool kNorm, typename Producer>
__global__ void __launch_bounds__(kBlock)
    FusedNormQuantizeKernel(Producer producer, const float* __restrict__ weight, int dim, float eps,
                            Int8ActivationsOut out, float* __restrict__ normed) {
  constexpr int kBlockWarps = kBlock / 32;
  __shared__ double scratch_d[kBlockWarps];
  __shared__ float scratch_f[kBlockWarps];
  __shared__ int scratch_i[kBlockWarps];
  const int64_t row = blockIdx.x;
  const int dim4 = dim / 4;
  float4 v[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int i = threadIdx.x + j * kBlock;
    v[j] = i < dim4 ? producer.Load(row, i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  if constexpr (kNorm) {
    double sum_sq = 0.0;  // each x*x is exact in double, as on the CPU
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      sum_sq += static_cast<double>(v[j].x) * v[j].x + static_cast<double>(v[j].y) * v[j].y +
                static_cast<double>(v[j].z) * v[j].z + static_cast<double>(v[j].w) * v[j].w;
    }
    sum_sq = BlockAllReduce<kBlockWarps>(sum_sq, SumOp{}, scratch_d);
    const float variance = __double2float_rn(__ddiv_rn(sum_sq, static_cast<double>(dim)));
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
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
  max_abs = BlockAllReduce<kBlockWarps>(max_abs, MaxAbsOp{}, scratch_f);
  // torch's `127 / t` is `t.reciprocal() * 127`: two roundings, kept as such.
  const float s = __fmul_rn(__frcp_rn(fmaxf(max_abs, 1e-5f)), 127.0f);
  auto quantize = [s](float f) {
    return static_cast<int>(fminf(fmaxf(rintf(__fmul_rn(f, s)), -128.0f), 127.0f));
  };
  int sum = 0;
  int8_t* qr = out.values + row * out.stride;
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
  for (int64_t i = dim + threadIdx.x; i < out.stride; i += kBlock) qr[i] = 0;
  if (out.sums != nullptr) sum = BlockAllReduce<kBlockWarps>(sum, SumOp{}, scratch_i);
  if (threadIdx.x == 0) {
    out.scales[row] = s;
    if (out.sums != nullptr) out.sums[row] = sum;
  }
}

// Widths the fused kernels take: a multiple of 4 up to 32768 (every model width), 16-byte aligned
// pointers. InvalidArgument otherwise.
inline absl::Status ValidateFusedRow(const char* op, int64_t rows, int64_t dim,
                                     const Int8ActivationsOut& out) {
  if (rows < 0 || dim <= 0 || dim % 4 != 0 || dim > 32768) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": width ", dim, " must be a positive multiple of 4 up to 32768"));
  }
  if (out.stride < dim || out.stride % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": stride ", out.stride, " must be >= ", dim, " and a multiple of 16"));
  }
  if (rows > 0 && (out.values == nullptr || out.scales == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null output"));
  }
  return absl::OkStatus();
}

// One block per row; the block shape follows the width.
template <bool kNorm, typename Producer>
absl::Status LaunchFusedNormQuantize(const Producer& producer, const float* weight, int64_t rows,
                                     int64_t dim, float eps, const Int8ActivationsOut& out,
                                     float* normed, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  const int d4 = static_cast<int>(dim / 4);
  const unsigned grid = static_cast<unsigned>(rows);
  const int w = static_cast<int>(dim);
#define BITSERVE_LAUNCH_FUSED(block, vec)    \
  FusedNormQuantizeKernel<block, vec, kNorm> \
      <<<grid, block, 0, stream>>>(producer, weight, w, eps, out, normed)
  // Block shapes measured with ncu on an H100 at one row (decode): 2560 wide, 4.80 us at 256 x 4
  // vs 4.90 at 1024 x 1; 6912 wide (the gated FFN, two divisions per element), 7.26 us at
  // 1024 x 2 vs 8.57 at 512 x 4: per-thread serial work costs more than the wider reductions.
  if (d4 <= 256) {
    BITSERVE_LAUNCH_FUSED(256, 1);
  } else if (d4 <= 512) {
    BITSERVE_LAUNCH_FUSED(256, 2);
  } else if (d4 <= 1024) {
    BITSERVE_LAUNCH_FUSED(256, 4);
  } else if (d4 <= 2048) {
    BITSERVE_LAUNCH_FUSED(1024, 2);
  } else if (d4 <= 4096) {
    BITSERVE_LAUNCH_FUSED(1024, 4);
  } else {
    BITSERVE_LAUNCH_FUSED(1024, 8);
  }
#undef BITSERVE_LAUNCH_FUSED
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda::internal
