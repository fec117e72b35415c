#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cublas_check.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/pdl.cuh"
#include "kernels/cuda/head/lm_head.cuh"
#include "kernels/cuda/norm/fused_norm_quantize.cuh"

namespace bitserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;

// One block per output row: the CPU's RMSNorm operations, then round to bf16.
__global__ void __launch_bounds__(kThreads)
    RmsNormToBf16Kernel(const float* __restrict__ x, const int32_t* __restrict__ row_index, int dim,
                        const float* __restrict__ weight, float eps,
                        __nv_bfloat16* __restrict__ out, float* __restrict__ normed) {
  WaitForPrerequisites();  // launched with LaunchDependent (pdl.cuh)
  AllowDependentLaunch();
  __shared__ double scratch[kThreads / 32];
  const int64_t r = blockIdx.x;
  const int64_t src = row_index != nullptr ? row_index[r] : r;
  const float* xr = x + src * dim;
  double sum_sq = 0.0;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    const double v = xr[i];
    sum_sq += v * v;
  }
  sum_sq = internal::BlockAllReduce<kThreads / 32>(sum_sq, internal::SumOp{}, scratch);
  const float variance = __double2float_rn(__ddiv_rn(sum_sq, static_cast<double>(dim)));
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    const float v = __fmul_rn(weight[i], __fmul_rn(xr[i], inv));
    if (normed != nullptr) normed[r * dim + i] = v;
    out[r * dim + i] = __float2bfloat16_rn(v);
  }
}

}  // namespace

absl::Status RmsNormToBf16(const float* x, const int32_t* row_index, int64_t rows, int64_t dim,
                           const float* weight, float eps, uint16_t* out, float* normed,
                           cudaStream_t stream) {
  if (rows < 0 || rows > 0x7fffffff || dim <= 0 || dim > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNormToBf16: bad shape [", rows, ", ", dim, "]"));
  }
  if (rows == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(
      LaunchDependent(RmsNormToBf16Kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0,
                      stream, 1, x, row_index, static_cast<int>(dim), weight, eps,
                      reinterpret_cast<__nv_bfloat16*>(out), normed));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Bf16LmHead>> Bf16LmHead::Create(cudaStream_t stream) {
  std::unique_ptr<Bf16LmHead> head(new Bf16LmHead);
  cublasHandle_t handle = nullptr;
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasCreate(&handle));
  head->handle_ = handle;
  auto workspace = DeviceBuffer<uint8_t>::Create(kWorkspaceBytes);
  if (!workspace.ok()) return workspace.status();
  head->workspace_ = std::move(workspace).value();
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(
      cublasSetWorkspace(handle, head->workspace_.get(), static_cast<size_t>(kWorkspaceBytes)));
  return head;
}

Bf16LmHead::~Bf16LmHead() {
  if (handle_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

absl::Status Bf16LmHead::Run(const uint16_t* weight, int64_t vocab, int64_t hidden,
                             const uint16_t* x, int64_t rows, float* logits, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  if (rows < 0 || vocab <= 0 || hidden <= 0 || vocab > 0x7fffffff || hidden > 0x7fffffff ||
      rows > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("Bf16LmHead: bad shape: ", rows, " rows, vocab ", vocab, ", hidden ", hidden));
  }
  auto handle = static_cast<cublasHandle_t>(handle_);
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  // Column-major view of row-major data: logits^T [vocab, rows] = W (col-major [hidden, vocab],
  // op T) x X^T (col-major [hidden, rows]).
  const float alpha = 1.0f, beta = 0.0f;
  BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(cublasGemmEx(
      handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(vocab), static_cast<int>(rows),
      static_cast<int>(hidden), &alpha, weight, CUDA_R_16BF, static_cast<int>(hidden), x,
      CUDA_R_16BF, static_cast<int>(hidden), &beta, logits, CUDA_R_32F, static_cast<int>(vocab),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
