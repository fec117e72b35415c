#include <cublas_v2.h>

#include <algorithm>
#include <cub/block/block_scan.cuh>
#include <type_traits>

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

// Item = (output row j, kRouterTokens tokens), run by `splits` warps of one block (1, 2, 4 or 8),
// each over its own contiguous share of k: lanes stride over the share four inputs at a time,
// kRouterUnroll strides' weights loaded at once, the first before the PDL wait (the router is never
// written). At decode the kernel is latency-bound (a few warps per SM); with the row split so that
// one batch of loads covers each share (hidden <= 8,192), every weight is in flight before the
// wait and what follows it is one round of activation loads. Each lane adds its inputs in
// ascending order, the lanes by a shuffle tree, the shares in order.
constexpr int kRouterUnroll = 8;
constexpr int kRouterBlock = 256;
__global__ void __launch_bounds__(kRouterBlock)
    Bf16RowProductsKernel(const float* __restrict__ x, int m, const uint16_t* __restrict__ w, int n,
                          int k, int splits, float* __restrict__ y) {
  __shared__ float shares[kRouterBlock / 32][kRouterTokens];
  const int warp = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  const int lane = threadIdx.x % 32, warp_here = threadIdx.x / 32;
  const int groups = (m + kRouterTokens - 1) / kRouterTokens;
  const int item = warp / splits, share = warp % splits;
  const bool active = item < n * groups;
  const int j = active ? item / groups : 0, t0 = active ? (item % groups) * kRouterTokens : 0;
  const int k4 = k / 4;
  const int span = (k4 + splits - 1) / splits;
  const int first = share * span, last = min(k4, first + span);
  const uint2* wr = reinterpret_cast<const uint2*>(w + static_cast<int64_t>(j) * k);
  uint2 b[kRouterUnroll];
  const auto load = [&](int base) {
#pragma unroll
    for (int u = 0; u < kRouterUnroll; ++u) {
      const int i = base + u * 32;
      b[u] = active && i < last ? __ldg(wr + i) : make_uint2(0, 0);
    }
  };
  load(first + lane);
  WaitForPrerequisites();
  AllowDependentLaunch();
  float acc[kRouterTokens] = {};
  if (active) {
    for (int base = first + lane; base < last; base += 32 * kRouterUnroll) {
      if (base != first + lane) load(base);
#pragma unroll
      for (int u = 0; u < kRouterUnroll; ++u) {
        const int i = base + u * 32;
        if (i >= last) break;
        const float w0 = Bf16(b[u].x & 0xffffu), w1 = Bf16(b[u].x >> 16),
                    w2 = Bf16(b[u].y & 0xffffu), w3 = Bf16(b[u].y >> 16);
#pragma unroll
        for (int t = 0; t < kRouterTokens; ++t) {
          if (t0 + t < m) {
            const float4 v =
                reinterpret_cast<const float4*>(x + static_cast<int64_t>(t0 + t) * k)[i];
            acc[t] = fmaf(v.x, w0, fmaf(v.y, w1, fmaf(v.z, w2, fmaf(v.w, w3, acc[t]))));
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kRouterTokens; ++t) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if (splits == 1) {
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) {
      if (active && lane == 0 && t0 + t < m) y[static_cast<int64_t>(t0 + t) * n + j] = acc[t];
    }
    return;
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) shares[warp_here][t] = acc[t];
  }
  __syncthreads();
  if (active && share == 0 && lane < kRouterTokens && t0 + lane < m) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += shares[warp_here + s][lane];
    y[static_cast<int64_t>(t0 + lane) * n + j] = sum;
  }
}

// Softmax + top-k of one token's logits by one block of >= num_experts threads (whole warps),
// one thread per expert. The selection is a rank, not k rounds of a warp arg-max: expert e's slot
// is the number of experts ahead of it (larger p, or equal p and a lower index), so every thread
// knows at once whether and where it lands; a thread stops counting once it is k behind. The
// probability sum stays one thread's sum in expert order (as the CPU adds), from float4 shared
// loads. probs4: dynamic shared memory of ceil(num_experts / 4) float4s. Ends with the block
// synchronized and te / tw written.
__device__ void SoftmaxTopKOfToken(const float* __restrict__ l_row, int num_experts, int top_k,
                                   bool norm_topk_prob, float4* probs4, int32_t* __restrict__ te,
                                   float* __restrict__ tw) {
  __shared__ float reduce[kMaxExperts / 32];
  __shared__ float picked[kMaxExperts];  // the top-k weights in slot order (norm_topk_prob)
  float* p = reinterpret_cast<float*>(probs4);
  const int e = threadIdx.x, lane = e % 32, warp = e / 32, warps = blockDim.x / 32;
  const int e4 = (num_experts + 3) / 4;
  const float l = e < num_experts ? l_row[e] : -INFINITY;
  float mx = l;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) reduce[warp] = mx;
  __syncthreads();
  mx = reduce[0];
  for (int w = 1; w < warps; ++w) mx = fmaxf(mx, reduce[w]);
  const float ex = expf(__fsub_rn(l, mx));
  if (e < num_experts) p[e] = ex;
  if (e >= num_experts && e < 4 * e4) p[e] = -1.0f;
  __syncthreads();
  if (e == 0) {
    float sum = 0.0f;  // in expert order, as the CPU
    for (int i = 0; i < e4; ++i) {
      const float4 v = probs4[i];
      sum = __fadd_rn(sum, v.x);
      if (4 * i + 1 < num_experts) sum = __fadd_rn(sum, v.y);
      if (4 * i + 2 < num_experts) sum = __fadd_rn(sum, v.z);
      if (4 * i + 3 < num_experts) sum = __fadd_rn(sum, v.w);
    }
    reduce[0] = sum;
  }
  __syncthreads();
  const float pe = e < num_experts ? __fdiv_rn(ex, reduce[0]) : -1.0f;
  __syncthreads();  // everyone has read the sum and the exps
  if (e < num_experts) p[e] = pe;
  __syncthreads();
  // Only NaN probabilities (a NaN or infinite logit makes every one NaN) leave slots unfilled.
  const bool valid = e < num_experts && !isnan(pe);
  const int num_valid = __syncthreads_count(valid);
  if (valid) {
    int ahead = 0;
    for (int i = 0; i < e4 && ahead < top_k; ++i) {
      const float4 v = probs4[i];
      const int o = 4 * i;
      ahead += (v.x > pe || (v.x == pe && o < e)) + (v.y > pe || (v.y == pe && o + 1 < e)) +
               (v.z > pe || (v.z == pe && o + 2 < e)) + (v.w > pe || (v.w == pe && o + 3 < e));
    }
    if (ahead < top_k) {
      te[ahead] = e;
      picked[ahead] = pe;
    }
  }
  if (e >= num_valid && e < top_k) {
    te[e] = e;
    picked[e] = 0.0f;
  }
  __syncthreads();
  if (norm_topk_prob) {
    if (e == 0) {
      float top_sum = 0.0f;
      for (int j = 0; j < top_k; ++j) top_sum = __fadd_rn(top_sum, picked[j]);
      reduce[0] = top_sum;
    }
    __syncthreads();
    if (e < top_k) tw[e] = __fdiv_rn(picked[e], reduce[0]);
  } else if (e < top_k) {
    tw[e] = picked[e];
  }
  __syncthreads();
}

// One block per token (blockDim: num_experts rounded up to whole warps).
__global__ void SoftmaxTopKKernel(const float* __restrict__ logits, int64_t stride, int num_experts,
                                  int top_k, bool norm_topk_prob, int32_t* __restrict__ experts,
                                  float* __restrict__ weights) {
  extern __shared__ float4 probs4[];  // [ceil(num_experts / 4)]: p, padded with -1
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t t = blockIdx.x;
  SoftmaxTopKOfToken(logits + t * stride, num_experts, top_k, norm_topk_prob, probs4,
                     experts + t * top_k, weights + t * top_k);
}

// One block of kThreads >= num_experts threads (at small batches the smallest that holds the
// experts: the scans are most of the grouping; more threads for many pairs): counts, the two
// exclusive scans (rows, items), the work list, then every pair's grouped row. `experts` is read
// through the coherent path: the fused kernel below has just written it.
template <int kThreads>
__device__ void GroupPairs(const int32_t* experts, int pairs, int top_k, int num_experts,
                           int rows_per_item, const ExpertGrouping& out) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ int counts[kThreads];
  __shared__ int cursor[kThreads];
  const int e = threadIdx.x;
  counts[e] = 0;
  __syncthreads();
  for (int i = e; i < pairs; i += kThreads) atomicAdd(&counts[experts[i]], 1);
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
  for (int i = e; i < pairs; i += kThreads) {
    const int x = experts[i];
    const int row = atomicAdd(&cursor[x], 1);
    out.source_rows[row] = i / top_k;
    out.row_expert[row] = x;
    out.pair_rows[i] = row;
  }
}

template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    GroupByExpertKernel(const int32_t* __restrict__ experts, int pairs, int top_k, int num_experts,
                        int rows_per_item, ExpertGrouping out) {
  WaitForPrerequisites();
  AllowDependentLaunch();
  GroupPairs<kThreads>(experts, pairs, top_k, num_experts, rows_per_item, out);
}

// One token (batch-1 decode): its softmax + top-k and the grouping of its top_k pairs in one
// block, one launch fewer on the step's critical path. The grouping reads the experts this block
// has just written (visible to it after the barrier SoftmaxTopKOfToken ends with).
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    SoftmaxTopKGroupOneKernel(const float* __restrict__ logits, int num_experts, int top_k,
                              bool norm_topk_prob, int32_t* __restrict__ experts,
                              float* __restrict__ weights, int rows_per_item, ExpertGrouping out) {
  extern __shared__ float4 probs4[];
  WaitForPrerequisites();
  AllowDependentLaunch();
  SoftmaxTopKOfToken(logits, num_experts, top_k, norm_topk_prob, probs4, experts, weights);
  GroupPairs<kThreads>(experts, top_k, top_k, num_experts, rows_per_item, out);
}

// Block (x: token t, y: kCombineThreads float4s of its row). The token's top-k rows and weights
// go to shared memory first, and each thread issues all of a group's row loads before it adds:
// at decode (a few tokens) the kernel is a few dependent load latencies, not bandwidth.
constexpr int kCombineThreads = 128;
constexpr int kCombineLoads = 8;  // rows loaded before adding
__global__ void __launch_bounds__(kCombineThreads)
    CombineExpertsKernel(const float* __restrict__ y, const int32_t* __restrict__ pair_rows,
                         const float* __restrict__ weights, int top_k, int hidden4,
                         const float* __restrict__ shared_logits, int64_t logit_stride,
                         const float* __restrict__ shared, float* __restrict__ out) {
  __shared__ float w[kMaxExperts];
  __shared__ int32_t rows[kMaxExperts];
  WaitForPrerequisites();
  AllowDependentLaunch();
  const int64_t t = blockIdx.x;
  for (int j = threadIdx.x; j < top_k; j += blockDim.x) {
    w[j] = weights[t * top_k + j];
    rows[j] = pair_rows[t * top_k + j];
  }
  float shared_gate = 0.0f;
  if (shared != nullptr) {
    const float l = shared_logits[t * logit_stride];
    shared_gate = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-l)));
  }
  __syncthreads();
  const int i = blockIdx.y * kCombineThreads + threadIdx.x;
  if (i >= hidden4) return;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int j0 = 0; j0 < top_k; j0 += kCombineLoads) {
    float4 v[kCombineLoads];
#pragma unroll
    for (int u = 0; u < kCombineLoads; ++u) {
      if (j0 + u < top_k) {
        v[u] = reinterpret_cast<const float4*>(y +
                                               static_cast<int64_t>(rows[j0 + u]) * hidden4 * 4)[i];
      }
    }
#pragma unroll
    for (int u = 0; u < kCombineLoads; ++u) {
      if (j0 + u >= top_k) break;
      const float wj = w[j0 + u];
      if (j0 + u == 0) {
        o = make_float4(__fmul_rn(wj, v[u].x), __fmul_rn(wj, v[u].y), __fmul_rn(wj, v[u].z),
                        __fmul_rn(wj, v[u].w));
      } else {
        o.x = __fadd_rn(o.x, __fmul_rn(wj, v[u].x));
        o.y = __fadd_rn(o.y, __fmul_rn(wj, v[u].y));
        o.z = __fadd_rn(o.z, __fmul_rn(wj, v[u].z));
        o.w = __fadd_rn(o.w, __fmul_rn(wj, v[u].w));
      }
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

// The selection's bounds (SoftmaxTopK and the one-token launch).
absl::Status CheckTopK(const char* what, int num_experts, int top_k) {
  if (num_experts < 1 || num_experts > kMaxExperts || top_k < 1 || top_k > num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": top ", top_k, " of ", num_experts,
                                                   " experts (at most ", kMaxExperts, ")"));
  }
  return absl::OkStatus();
}

// Room for the work items of `pairs` grouped rows (GroupByExpert and the one-token launch).
absl::Status CheckItems(const char* what, int64_t pairs, int num_experts, int rows_per_item,
                        int max_items) {
  const int needed = MaxGroupedItems(pairs, num_experts, rows_per_item);
  if (max_items < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": room for ", max_items, " work items, ", needed, " may be needed"));
  }
  return absl::OkStatus();
}

// launch(std::integral_constant<int, N>) for the smallest block N of 128, 256, 512 or 1,024
// threads that is >= want (the grouping kernels' block sizes).
template <typename Launch>
cudaError_t WithBlockThreads(int64_t want, Launch&& launch) {
  if (want <= 128) return launch(std::integral_constant<int, 128>{});
  if (want <= 256) return launch(std::integral_constant<int, 256>{});
  if (want <= 512) return launch(std::integral_constant<int, 512>{});
  return launch(std::integral_constant<int, 1024>{});
}

}  // namespace

absl::Status Bf16RowProducts(const float* x, int64_t m, const uint16_t* w, int n, int64_t k,
                             float* y, cudaStream_t stream) {
  if (m < 0 || n < 1 || k < 4 || k % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Bf16RowProducts: bad shape [", m, ", ", k, "] x [", n, ", ", k, "]"));
  }
  if (m == 0) return absl::OkStatus();
  // Warps a row: enough that one batch of loads covers each warp's share, at most a block's.
  const int64_t batches = (k / 4 + 32 * kRouterUnroll - 1) / (32 * kRouterUnroll);
  const int splits = batches <= 1 ? 1 : batches <= 2 ? 2 : batches <= 4 ? 4 : kRouterBlock / 32;
  const int64_t warps = n * ((m + kRouterTokens - 1) / kRouterTokens) * splits;
  const int64_t blocks = (warps * 32 + kRouterBlock - 1) / kRouterBlock;
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(
      Bf16RowProductsKernel, dim3(static_cast<unsigned>(blocks)), dim3(kRouterBlock), 0, stream, 1,
      x, static_cast<int>(m), w, n, static_cast<int>(k), splits, y));
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
  RETURN_IF_ERROR(CheckTopK("SoftmaxTopK", num_experts, top_k));
  if (logit_stride < num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("SoftmaxTopK: logit rows of ", logit_stride,
                                                   " for ", num_experts, " experts"));
  }
  if (m == 0) return absl::OkStatus();
  const int threads = (num_experts + 31) / 32 * 32;
  const size_t shared = sizeof(float4) * ((num_experts + 3) / 4);
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(
      SoftmaxTopKKernel, dim3(static_cast<unsigned>(m)), dim3(threads), shared, stream, 1, logits,
      logit_stride, num_experts, top_k, norm_topk_prob, experts, weights));
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
  RETURN_IF_ERROR(CheckItems("GroupByExpert", pairs, num_experts, rows_per_item, max_items));
  // At least a thread per expert; more for many pairs (their loops run pairs / threads times).
  BITSERVE_CUDA_RETURN_IF_ERROR(
      WithBlockThreads(std::max<int64_t>(num_experts, pairs / 2), [&](auto threads) {
        constexpr int kThreads = decltype(threads)::value;
        return LaunchDependent(GroupByExpertKernel<kThreads>, dim3(1), dim3(kThreads), 0, stream, 1,
                               experts, static_cast<int>(pairs), top_k, num_experts, rows_per_item,
                               out);
      }));
  return absl::OkStatus();
}

absl::Status SoftmaxTopKGroupOneToken(const float* logits, int num_experts, int top_k,
                                      bool norm_topk_prob, int32_t* experts, float* weights,
                                      int rows_per_item, int max_items, const ExpertGrouping& out,
                                      cudaStream_t stream) {
  RETURN_IF_ERROR(CheckTopK("SoftmaxTopKGroupOneToken", num_experts, top_k));
  if (rows_per_item < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SoftmaxTopKGroupOneToken: ", rows_per_item, " rows per item"));
  }
  RETURN_IF_ERROR(
      CheckItems("SoftmaxTopKGroupOneToken", top_k, num_experts, rows_per_item, max_items));
  const size_t shared = sizeof(float4) * ((num_experts + 3) / 4);
  BITSERVE_CUDA_RETURN_IF_ERROR(WithBlockThreads(num_experts, [&](auto threads) {
    constexpr int kThreads = decltype(threads)::value;
    return LaunchDependent(SoftmaxTopKGroupOneKernel<kThreads>, dim3(1), dim3(kThreads), shared,
                           stream, 1, logits, num_experts, top_k, norm_topk_prob, experts, weights,
                           rows_per_item, out);
  }));
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
  if (top_k > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat("CombineExperts: top ", top_k, " (at most ", kMaxExperts, ")"));
  }
  const dim3 grid(static_cast<unsigned>(m), (hidden4 + kCombineThreads - 1) / kCombineThreads);
  BITSERVE_CUDA_RETURN_IF_ERROR(LaunchDependent(CombineExpertsKernel, grid, dim3(kCombineThreads),
                                                0, stream, 1, y, pair_rows, weights, top_k, hidden4,
                                                shared_logits, logit_stride, shared, out));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
