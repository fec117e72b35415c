// Device-side RMSNorm + per-token int8 quantization of one row held in registers, for kernels that
// produce the row themselves (a residual add, the gated FFN activation) and quantize it in the same
// pass, and for act_quant.cu's rows read from memory. The float operations and their order are the
// CPU reference's (kernels/cpu/rms_norm.h + act_quant.h); only the float64 sum of squares is added
// in another order than on the CPU (see act_quant.cuh for what that can change: rarely one ulp of
// the variance).
//
// A row is one block, or, when there are few rows (decode) on sm_90, one cluster of kCluster
// blocks that each hold a slice of it and combine their block reductions through distributed
// shared memory: one block per row left the GPU nearly idle at one token (the 28672-wide gated FFN
// row of llama-70b took 15 us on one SM of an H200, the 8192-wide norms 5-5.5 us).
//
// A Producer is a small struct passed by value with
//   __device__ float4 Load(int64_t row, int i) const;   // elements 4i .. 4i+3 of the row
// called exactly once per (row, i) with i < dim / 4, so it may also store (the residual add does),
// and optionally
//   __device__ int64_t NormWeightOffset(int64_t row) const;  // the row's norm weights: weight + it
// for rows whose norm weights differ (the experts' sub-norms of a grouped MoE FFN; read after the
// wait, so it may depend on what the previous kernel wrote).
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_info.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/ternary/int8_activations.h"

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

// BlockAllReduce over a row split across the kCluster blocks of a cluster: each block's result goes
// to its `slot` (one per reduction, never reused, so no block can overwrite a value a peer has not
// read yet), and every thread of every block combines the slots in rank order: identical bits
// everywhere. The kernel ends with a cluster barrier so no block leaves while a peer may still
// read its slots.
template <int kCluster, int kBlockWarps, typename T, typename Op>
__device__ __forceinline__ T RowAllReduce(T v, Op op, T* scratch, T* slot) {
  v = BlockAllReduce<kBlockWarps>(v, op, scratch);
  if constexpr (kCluster > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    if (threadIdx.x == 0) *slot = v;
    cluster.sync();
    v = *cluster.map_shared_rank(slot, 0);
#pragma unroll
    for (int r = 1; r < kCluster; ++r) v = op(v, *cluster.map_shared_rank(slot, r));
#else
    __trap();  // the launcher starts clusters only on sm_90 and later
#endif
  }
  return v;
}

// Block (row / kCluster, part) holds float4 i = part * kBlock + threadIdx.x + j * kBlock *
// kCluster.
template <int kBlock, int kVec, bool kNorm, int kCluster, typename Producer>
__global__ void __launch_bounds__(kBlock)
    FusedNormQuantizeKernel(Producer producer, const float* __restrict__ weight, int dim, float eps,
                            Int8ActivationsOut out, float* __restrict__ normed) {
  constexpr int kBlockWarps = kBlock / 32;
  constexpr int kRowThreads = kBlock * kCluster;
  __shared__ double scratch_d[kBlockWarps];
  __shared__ float scratch_f[kBlockWarps];
  __shared__ int scratch_i[kBlockWarps];
  __shared__ double slot_d;
  __shared__ float slot_f;
  __shared__ int slot_i;
  const int64_t row = blockIdx.x / kCluster;
  const int part = static_cast<int>(blockIdx.x % kCluster);
  const int first = part * kBlock + static_cast<int>(threadIdx.x);
  const int dim4 = dim / 4;
  constexpr bool kRowWeights = requires(const Producer& p) { p.NormWeightOffset(int64_t{0}); };
  // The norm weights are constant: with few per thread (the decode shapes) they are loaded before
  // the wait, so their latency hides under the previous kernel's end.
  constexpr bool kEarlyWeights = kNorm && kVec <= 2 && !kRowWeights;
  float4 early_w[kEarlyWeights ? kVec : 1];
  if constexpr (kEarlyWeights) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int i = first + j * kRowThreads;
      early_w[j] = i < dim4 ? __ldg(reinterpret_cast<const float4*>(weight) + i)
                            : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  }
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  if constexpr (kRowWeights) weight += producer.NormWeightOffset(row);
  float4 v[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int i = first + j * kRowThreads;
    v[j] = i < dim4 ? producer.Load(row, i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  if constexpr (kNorm) {
    double sum_sq = 0.0;  // each x*x is exact in double, as on the CPU
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      sum_sq += static_cast<double>(v[j].x) * v[j].x + static_cast<double>(v[j].y) * v[j].y +
                static_cast<double>(v[j].z) * v[j].z + static_cast<double>(v[j].w) * v[j].w;
    }
    sum_sq = RowAllReduce<kCluster, kBlockWarps>(sum_sq, SumOp{}, scratch_d, &slot_d);
    const float variance = __double2float_rn(__ddiv_rn(sum_sq, static_cast<double>(dim)));
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int i = first + j * kRowThreads;
      float4 wv;
      if constexpr (kEarlyWeights) {
        wv = early_w[j];
      } else {
        wv = i < dim4 ? __ldg(reinterpret_cast<const float4*>(weight) + i)
                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
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
  max_abs = RowAllReduce<kCluster, kBlockWarps>(max_abs, MaxAbsOp{}, scratch_f, &slot_f);
  // torch's `127 / t` is `t.reciprocal() * 127`: two roundings, kept as such.
  const float s = __fmul_rn(__frcp_rn(fmaxf(max_abs, 1e-5f)), 127.0f);
  auto quantize = [s](float f) {
    return static_cast<int>(fminf(fmaxf(rintf(__fmul_rn(f, s)), -128.0f), 127.0f));
  };
  int sum = 0;
  int8_t* qr = out.values + row * out.stride;
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int i = first + j * kRowThreads;
    if (i < dim4) {
      const int a = quantize(v[j].x), b = quantize(v[j].y), c = quantize(v[j].z),
                d = quantize(v[j].w);
      sum += a + b + c + d;
      reinterpret_cast<char4*>(qr)[i] =
          make_char4(static_cast<signed char>(a), static_cast<signed char>(b),
                     static_cast<signed char>(c), static_cast<signed char>(d));
    }
  }
  for (int64_t i = dim + first; i < out.stride; i += kRowThreads) qr[i] = 0;
  if (out.sums != nullptr)
    sum = RowAllReduce<kCluster, kBlockWarps>(sum, SumOp{}, scratch_i, &slot_i);
  if (part == 0 && threadIdx.x == 0) {
    out.scales[row] = s;
    if (out.sums != nullptr) out.sums[row] = sum;
  }
  if constexpr (kCluster > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cooperative_groups::this_cluster().sync();  // peers may still read this block's slots
#endif
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

// Whether a cluster of kCluster blocks of this kernel can be resident on the current device (a
// GPU partition may have fewer multiprocessors per GPC than the cluster needs); asked once.
template <int kBlock, int kVec, bool kNorm, int kCluster, typename Producer>
bool FusedNormClusterFits() {
  static const bool fits = [] {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(kCluster);
    config.blockDim = dim3(kBlock);
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = kCluster;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    int clusters = 0;
    const cudaError_t e = cudaOccupancyMaxActiveClusters(
        &clusters, FusedNormQuantizeKernel<kBlock, kVec, kNorm, kCluster, Producer>, &config);
    if (e != cudaSuccess) cudaGetLastError();  // clear it: the caller launches without clusters
    return e == cudaSuccess && clusters > 0;
  }();
  return fits;
}

template <int kBlock, int kVec, bool kNorm, int kCluster, typename Producer>
cudaError_t LaunchFusedNormQuantizeShape(const Producer& producer, const float* weight,
                                         int64_t rows, int dim, float eps,
                                         const Int8ActivationsOut& out, float* normed,
                                         cudaStream_t stream) {
  return LaunchDependent(FusedNormQuantizeKernel<kBlock, kVec, kNorm, kCluster, Producer>,
                         dim3(static_cast<unsigned>(rows * kCluster)), dim3(kBlock), 0, stream,
                         kCluster, producer, weight, dim, eps, out, normed);
}

// One block per row, or (few rows, wide enough, sm_90 and later) one cluster of blocks per row;
// the block shape follows the width.
template <bool kNorm, typename Producer>
absl::Status LaunchFusedNormQuantize(const Producer& producer, const float* weight, int64_t rows,
                                     int64_t dim, float eps, const Int8ActivationsOut& out,
                                     float* normed, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  const int d4 = static_cast<int>(dim / 4);
  const int w = static_cast<int>(dim);
  const CurrentDeviceTraits device = GetCurrentDeviceTraits();
  // Clusters of 8 for rows wider than 4096 while the row blocks fit in one wave. ncu on an H200
  // at one row: 8192 wide 5.4 us (cluster) vs 6.3 (one block), 28672 wide 8.3 vs 19.6, 6912 wide
  // 5.7 vs 7.2, but 2560 wide 4.9 (cluster of 4) vs 4.4 (one block).
  const bool clusters = device.compute_major >= 9 && d4 > 1024 &&
                        rows * 8 <= device.multiprocessors &&
                        FusedNormClusterFits<1024, 1, kNorm, 8, Producer>();
  cudaError_t launched;
#define BITSERVE_LAUNCH_FUSED(block, vec, cluster)                                               \
  launched = LaunchFusedNormQuantizeShape<block, vec, kNorm, cluster>(producer, weight, rows, w, \
                                                                      eps, out, normed, stream)
  if (clusters) {
    if (d4 <= 2048) {
      BITSERVE_LAUNCH_FUSED(256, 1, 8);
    } else if (d4 <= 4096) {
      BITSERVE_LAUNCH_FUSED(512, 1, 8);
    } else {
      BITSERVE_LAUNCH_FUSED(1024, 1, 8);
    }
  } else if (d4 <= 256) {
    // One block per row. Shapes measured with ncu on an H100 at one row, before clusters: 2560
    // wide, 4.80 us at 256 x 4 vs 4.90 at 1024 x 1; 6912 wide (the gated FFN, two divisions per
    // element), 7.26 us at 1024 x 2 vs 8.57 at 512 x 4: per-thread serial work costs more than
    // the wider reductions.
    BITSERVE_LAUNCH_FUSED(256, 1, 1);
  } else if (d4 <= 512) {
    BITSERVE_LAUNCH_FUSED(256, 2, 1);
  } else if (d4 <= 1024) {
    BITSERVE_LAUNCH_FUSED(256, 4, 1);
  } else if (d4 <= 2048) {
    BITSERVE_LAUNCH_FUSED(1024, 2, 1);
  } else if (d4 <= 4096) {
    BITSERVE_LAUNCH_FUSED(1024, 4, 1);
  } else {
    BITSERVE_LAUNCH_FUSED(1024, 8, 1);
  }
#undef BITSERVE_LAUNCH_FUSED
  BITSERVE_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

}  // namespace bitserve::cuda::internal
