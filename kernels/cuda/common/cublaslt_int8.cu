#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/cublas_check.cuh"
#include "kernels/cuda/common/cublaslt_int8.cuh"

namespace bitserve::cuda {
namespace {

constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;

}  // namespace

struct CublasLtInt8Matmul::Plan {
  int64_t rows = 0, k = 0, tokens = 0, x_stride = 0, ldc = 0;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

absl::StatusOr<std::unique_ptr<CublasLtInt8Matmul>> CublasLtInt8Matmul::Create() {
  std::unique_ptr<CublasLtInt8Matmul> m(new CublasLtInt8Matmul);
  BITSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&m->handle_));
  ASSIGN_OR_RETURN(m->workspace_, DeviceBuffer<uint8_t>::Create(kWorkspaceBytes));
  return m;
}

CublasLtInt8Matmul::~CublasLtInt8Matmul() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<const CublasLtInt8Matmul::Plan*> CublasLtInt8Matmul::FindPlan(
    int64_t rows, int64_t k, int64_t tokens, int64_t x_stride, int64_t ldc) {
  for (const auto& p : plans_) {
    if (p->rows == rows && p->k == k && p->tokens == tokens && p->x_stride == x_stride &&
        p->ldc == ldc) {
      return p.get();
    }
  }
  auto plan = std::make_unique<Plan>();
  plan->rows = rows;
  plan->k = k;
  plan->tokens = tokens;
  plan->x_stride = x_stride;
  plan->ldc = ldc;
  BITSERVE_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32I, CUDA_R_32I));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  BITSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  BITSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  BITSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_8I, k, rows, k));
  BITSERVE_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_8I, k, tokens, x_stride));
  BITSERVE_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_32I, rows, tokens, ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  BITSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = static_cast<uint64_t>(workspace_.bytes());
  // The activations need only be 16-byte aligned (a row offset of a larger buffer, say).
  const uint32_t b_alignment = 16;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                  &b_alignment, sizeof(b_alignment));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->c,
                                            pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  BITSERVE_CUBLAS_RETURN_IF_ERROR(status);
  if (found == 0) {
    return absl::UnimplementedError(
        absl::StrCat("cuBLASLt has no int8 algorithm for ", rows, " x ", k, " x ", tokens));
  }
  plan->algo = result.algo;
  plans_.push_back(std::move(plan));
  return plans_.back().get();
}

absl::Status CublasLtInt8Matmul::Run(const int8_t* w, int64_t rows, int64_t k, const int8_t* x,
                                     int64_t tokens, int64_t x_stride, int32_t* products,
                                     int64_t ldc, cudaStream_t stream) {
  ASSIGN_OR_RETURN(const Plan* plan, FindPlan(rows, k, tokens, x_stride, ldc));
  const int32_t alpha = 1, beta = 0;
  BITSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
      handle_, plan->desc, &alpha, w, plan->a, x, plan->b, &beta, products, plan->c, products,
      plan->c, &plan->algo, workspace_.get(), static_cast<size_t>(workspace_.bytes()), stream));
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
