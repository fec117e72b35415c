// The cuBLAS / cuBLASLt counterpart of BITSERVE_CUDA_RETURN_IF_ERROR: a failure becomes an
// absl::Status naming the statement, file and line.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitserve::cuda {

inline absl::Status CublasStatus(cublasStatus_t status, const char* statement, const char* file,
                                 int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(file, ":", line, ": ", statement, " failed: ", cublasLtGetStatusString(status)));
}

}  // namespace bitserve::cuda

#define BITSERVE_CUBLAS_RETURN_IF_ERROR(statement)                                   \
  do {                                                                               \
    ::absl::Status bitserve_cublas_status_ =                                         \
        ::bitserve::cuda::CublasStatus((statement), #statement, __FILE__, __LINE__); \
    if (!bitserve_cublas_status_.ok()) return bitserve_cublas_status_;               \
  } while (0)

// The same for the cuBLAS (v2) API.
#define BITSERVE_CUBLAS_V2_RETURN_IF_ERROR(statement)                          \
  do {                                                                         \
    const cublasStatus_t bitserve_status_ = (statement);                       \
    if (bitserve_status_ != CUBLAS_STATUS_SUCCESS) {                           \
      return absl::InternalError(                                              \
          absl::StrCat(__FILE__, ":", __LINE__, ": ", #statement,              \
                       " failed: ", cublasGetStatusString(bitserve_status_))); \
    }                                                                          \
  } while (0)
