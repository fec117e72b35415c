#include <cublas_v2.h>

#include <cub/block/block_scan.cuh>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/cublas_check.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/moe/moe_routing.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kRouterTokens = 4;  // tokens per warp of the router product
constexpr int kMaxExperts = 1024;

__device__ __forceinline__ float Bf16(uint32_t bits) { return __uint_as_float(bits << 16); }

// Warp = (output row j, kRouterTokens tokens): lanes stride over k four inputs at a time,
// kRouterUnroll strides' weights loaded at once (the first before the PDL wait: the router is never
// written), so a warp has that many loads in flight instead of one: at decode the kernel is
// latency-bound (a few warps per SM). Each lane still adds its inputs in ascending order.
constexpr int kRouterUnroll = 8;
__global__ void Bf16RowProductsKernel(const float* __restrict__ x, int m,
                                      const uint16_t* __restrict__ w, int n, int k,
                                      float* __restrict__ y) {
  const int warp = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  const int lane = threadIdx.x % 32;
  const int groups = (m + kRouterTokens - 1) / kRouterTokens;
  const bool active = warp < n * groups;
  const int j = active ? warp / groups : 0, t0 = active ? (warp % groups) * kRouterTokens : 0;
  const int k4 = k / 4;
  const uint2* wr = reinterpret_cast<const uint2*>(w + static_cast<int64_t>(j) * k);
  uint2 b[kRouterUnroll];
  const auto load = [&](int base) {
#pragma unroll
    for (int u = 0; u < kRouterUnroll; ++u) {
      const int i = base + u * 32;
      b[u] = active && i < k4 ? __ldg(wr + i) : make_uint2(0, 0);
    }
  };
  load(lane);
  WaitForPrerequisites();
  AllowDependentLaunch();
  if (!active) return;
  float acc[kRouterTokens] = {};
  for (int base = lane; base < k4; base += 32 * kRouterUnroll) {
    if (base != lane) load(base);
#pragma unroll
    for (int u = 0; u < kRouterUnroll; ++u) {
      const int i = base + u * 32;
      if (i >= k4) break;
      const float w0 = Bf16(b[u].x & 0xffffu), w1 = Bf16(b[u].x >> 16), w2 = Bf16(b[u].y & 0xffffu),
                  w3 = Bf16(b[u].y >> 16);
#pragma unroll
      for (int t = 0; t < kRouterTokens; ++t) {
        if (t0 + t < m) {
          const float4 v = reinterpret_cast<const float4*>(x + static_cast<int64_t>(t0 + t) * k)[i];
          acc[t] = fmaf(v.x, w0, fmaf(v.y, w1, fmaf(v.z, w2, fmaf(v.w, w3, acc[t]))));
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kRouterTokens; ++t) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
    if (lane == 0 && t0 + t < m) y[static_cast<int64_t>(t0 + t) * n + j] = acc[t];
  }
}

// Warp = one token; its probabilities live in shared memory (kWarps tokens per block).
constexpr int kTopKWarps = 4;
__global__ void SoftmaxTopKKernel(const float* __restrict__ logits, int64_t stride, int m,
                                  int num_experts, int top_k, bool norm_topk_prob,
                                  int32_t* __restrict__ experts, float* __restrict__ weights) {
  extern __shared__ float probs[];  // [kTopKWarps][num_experts]
  WaitForPrerequisites();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t = blockIdx.x * kTopKWarps + warp;
  if (t >= m) return;
  float* p = probs + warp * num_experts;
  const float* l = logits + static_cast<int64_t>(t) * stride;
  float mx = -INFINITY;
  for (int e = lane; e < num_experts; e += 32) mx = fmaxf(mx, l[e]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  for (int e = lane; e < num_experts; e += 32) p[e] = expf(__fsub_rn(l[e], mx));
  __syncwarp();
  float sum = 0.0f;  // in expert order, as the CPU
  if (lane == 0) {
    for (int e = 0; e < num_experts; ++e) sum = __fadd_rn(sum, p[e]);
  }
  sum = __shfl_sync(0xffffffffu, sum, 0);
  for (int e = lane; e < num_experts; e += 32) p[e] = __fdiv_rn(p[e], sum);
  __syncwarp();
  int32_t* te = experts + static_cast<int64_t>(t) * top_k;
  float* tw = weights + static_cast<int64_t>(t) * top_k;
  for (int j = 0; j < top_k; ++j) {
    // This lane's best untaken expert (taken ones hold -1; p >= 0), then the warp's: larger p,
    // on a tie the lower index.
    float best = -1.0f;
    int index = num_experts;
    for (int e = lane; e < num_experts; e += 32) {
      if (p[e] > best) best = p[e], index = e;
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, index, o);
      if (ob > best || (ob == best && oi < index)) best = ob, index = oi;
    }
    if (index >= num_experts) index = j, best = 0.0f;  // only NaN logits leave none
    if (lane == 0) {
      te[j] = index;
      tw[j] = best;
      p[index] = -1.0f;
    }
    __syncwarp();
  }
  if (lane == 0 && norm_topk_prob) {
    float top_sum = 0.0f;
    for (int j = 0; j < top_k; ++j) top_sum = __fadd_rn(top_sum, tw[j]);
    for (int j = 0; j < top_k; ++j) tw[j] = __fdiv_rn(tw[j], top_sum);
  }
}

// One block of kMaxExperts threads: counts, the two exclusive scans (rows, items), the work list,
// then every pair's grouped row.
__global__ void __launch_bounds__(kMaxExperts)
    GroupByExpertKernel(const int32_t* __restrict__ experts, int pairs, int top_k, int num_experts,
                        int rows_per_item, ExpertGrouping out) {
  using Scan = cub::BlockScan<int, kMaxExperts>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ int counts[kMaxExperts];
  __shared__ int cursor[kMaxExperts];
  WaitForPrerequisites();
  const int e = threadIdx.x;
  counts[e] = 0;
  __syncthreads();
  for (int i = e; i < pairs; i += kMaxExperts) atomicAdd(&counts[experts[i]], 1);
  __syncthreads();
  const int count = e < num_experts ? counts[e] : 0;
  int first_row = 0, first_item = 0, total_items = 0;
  Scan(scan).ExclusiveSum(count, first_row);
  __syncthreads();
  const int items = (count + rows_per_item - 1) / rows_per_item;
  Scan(scan).ExclusiveSum(items, first_item, total_items);
  if (e < num_experts) {
    out.expert_rows[e] = first_row;
    cursor[e] = first_row;
    for (int c = 0; c < items; ++c) {
      GroupedProductItem item;
      item.expert = e;
      item.row_begin = first_row + c * rows_per_item;
      item.rows = min(rows_per_item, count - c * rows_per_item);
      out.items[first_item + c] = item;
    }
  }
  if (e == 0) {
    out.expert_rows[num_experts] = pairs;
    *out.num_items = total_items;
  }
  __syncthreads();
  for (int i = e; i < pairs; i += kMaxExperts) {
    const int x = experts[i];
    const int row = atomicAdd(&cursor[x], 1);
    out.source_rows[row] = i / top_k;
    out.row_expert[row] = x;
    out.pair_rows[i] = row;
  }
}

__global__ void CombineExpertsKernel(const float* __restrict__ y,
                                     const int32_t* __restrict__ pair_rows,
                                     const float* __restrict__ weights, int top_k, int hidden4,
                                     const float* __restrict__ shared_logits, int64_t logit_stride,
                                     const float* __restrict__ shared, float* __restrict__ out) {
  WaitForPrerequisites();
  const int64_t t = blockIdx.x;
  float shared_gate = 0.0f;
  if (shared != nullptr) {
    const float l = shared_logits[t * logit_stride];
    shared_gate = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-l)));
  }
  for (int i = threadIdx.x; i < hidden4; i += blockDim.x) {
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int j = 0; j < top_k; ++j) {
      const float w = weights[t * top_k + j];
      const float4 v = reinterpret_cast<const float4*>(
          y + static_cast<int64_t>(pair_rows[t * top_k + j]) * hidden4 * 4)[i];
      if (j == 0) {
        o = make_float4(__fmul_rn(w, v.x), __fmul_rn(w, v.y), __fmul_rn(w, v.z), __fmul_rn(w, v.w));
      } else {
        o.x = __fadd_rn(o.x, __fmul_rn(w, v.x));
        o.y = __fadd_rn(o.y, __fmul_rn(w, v.y));
        o.z = __fadd_rn(o.z, __fmul_rn(w, v.z));
        o.w = __fadd_rn(o.w, __fmul_rn(w, v.w));
      }
    }
    if (shared != nullptr) {
      const float4 s = reinterpret_cast<const float4*>(shared + t * hidden4 * 4)[i];
      o.x = __fadd_rn(o.x, __fmul_rn(shared_gate, s.x));
      o.y = __fadd_rn(o.y, __fmul_rn(shared_gate, s.y));
      o.z = __fadd_rn(o.z, __fmul_rn(shared_gate, s.z));
      o.w = __fadd_rn(o.w, __fmul_rn(shared_gate, s.w));
    }
    reinterpret_cast<float4*>(out + t * hidden4 * 4)[i] = o;
  }
}

}  // namespace

absl::Status Bf16RowProducts(const float* x, int64_t m, const uint16_t* w, int n, int64_t k,
                             float* y, cudaStream_t stream) {
  if (m < 0 || n < 1 || k < 4 || k % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Bf16RowProducts: bad shape [", m, ", ", k, "] x [", n, ", ", k, "]"));
  }
  if (m == 0) return absl::OkStatus();
  const int64_t warps = n * ((m + kRouterTokens - 1) / kRouterTokens);
  constexpr int kBlock = 256;
  const int64_t blocks = (warps * 32 + kBlock - 1) / kBlock;
  BITSERVE_CUDA_RETURN_IF_ERROR(
      LaunchDependent(Bf16RowProductsKernel, dim3(static_cast<unsigned>(blocks)), dim3(kBlock), 0,
                      stream, 1, x, static_cast<int>(m), w, n, static_cast<int>(k), y));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RouterSgemm>> RouterSgemm::Create() {
  constexpr int64_t kWorkspaceBytes = 4 << 20;
  std::unique_ptr<RouterSgemm> r(new RouterSgemm);
  cublasHandle_t handle = nullptr;
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasCreate(&handle));
  r->handle_ = handle;
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  ASSIGN_OR_RETURN(r->workspace_, DeviceBuffer<uint8_t>::Create(kWorkspaceBytes));
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(
      cublasSetWorkspace(handle, r->workspace_.get(), static_cast<size_t>(kWorkspaceBytes)));
  return r;
}

RouterSgemm::~RouterSgemm() {
  if (handle_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

absl::Status RouterSgemm::Run(const float* x, int64_t m, const float* w, int n, int64_t k, float* y,
                              cudaStream_t stream) {
  if (m < 0 || n < 1 || k < 1 || m > 0x7fffffff || k > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("RouterSgemm: bad shape [", m, ", ", k, "] x [", n, ", ", k, "]"));
  }
  if (m == 0) return absl::OkStatus();
  auto handle = static_cast<cublasHandle_t>(handle_);
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  // Column-major view of row-major data: y^T [n, m] = W (col-major [k, n], op T) x X^T [k, m].
  const float alpha = 1.0f, beta = 0.0f;
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(
      cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(m), static_cast<int>(k),
                  &alpha, w, static_cast<int>(k), x, static_cast<int>(k), &beta, y, n));
  return absl::OkStatus();
}

absl::Status SoftmaxTopK(const float* logits, int64_t logit_stride, int64_t m, int num_experts,
                         int top_k, bool norm_topk_prob, int32_t* experts, float* weights,
                         cudaStream_t stream) {
  if (num_experts < 1 || num_experts > kMaxExperts || top_k < 1 || top_k > num_experts ||
      logit_stride < num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("SoftmaxTopK: top ", top_k, " of ", num_experts,
                                                   " experts (at most ", kMaxExperts, ")"));
  }
  if (m == 0) return absl::OkStatus();
  const size_t shared = sizeof(float) * kTopKWarps * num_experts;
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(
      SoftmaxTopKKernel, dim3(static_cast<unsigned>((m + kTopKWarps - 1) / kTopKWarps)),
      dim3(32 * kTopKWarps), shared, stream, 1, logits, logit_stride, static_cast<int>(m),
      num_experts, top_k, norm_topk_prob, experts, weights));
  return absl::OkStatus();
}

absl::Status GroupByExpert(const int32_t* experts, int64_t m, int top_k, int num_experts,
                           int rows_per_item, int max_items, const ExpertGrouping& out,
                           cudaStream_t stream) {
  const int64_t pairs = m * top_k;
  if (num_experts < 1 || num_experts > kMaxExperts || top_k < 1 || rows_per_item < 1 ||
      pairs >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat("GroupByExpert: ", m, " tokens x top ", top_k,
                                                   " over ", num_experts, " experts"));
  }
  if (max_items < MaxGroupedItems(pairs, num_experts, rows_per_item)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GroupByExpert: room for ", max_items, " work items, ",
                     MaxGroupedItems(pairs, num_experts, rows_per_item), " may be needed"));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(GroupByExpertKernel, dim3(1), dim3(kMaxExperts), 0,
                                                stream, 1, experts, static_cast<int>(pairs), top_k,
                                                num_experts, rows_per_item, out));
  return absl::OkStatus();
}

absl::Status CombineExperts(const float* y, const int32_t* pair_rows, const float* weights,
                            int64_t m, int top_k, int64_t hidden, const float* shared_logits,
                            int64_t logit_stride, const float* shared, float* out,
                            cudaStream_t stream) {
  if (hidden < 4 || hidden % 4 != 0 || top_k < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CombineExperts: hidden ", hidden, ", top ", top_k));
  }
  if (m == 0) return absl::OkStatus();
  const int hidden4 = static_cast<int>(hidden / 4);
  const int block = hidden4 >= 256 ? 256 : ((hidden4 + 31) / 32) * 32;
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(
      CombineExpertsKernel, dim3(static_cast<unsigned>(m)), dim3(block), 0, stream, 1, y, pair_rows,
      weights, top_k, hidden4, shared_logits, logit_stride, shared, out));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
