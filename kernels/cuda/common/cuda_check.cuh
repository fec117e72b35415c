// One checking macro for CUDA runtime calls: a failure becomes an absl::Status naming the
// statement, file, line and device.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitserve::cuda {

inline absl::Status CudaStatus(cudaError_t error, const char* statement, const char* file,
                               int line) {
  if (error == cudaSuccess) return absl::OkStatus();
  int device = -1;
  cudaGetDevice(&device);
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", statement, " failed on device ",
                                          device, ": ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ")"));
}

}  // namespace bitserve::cuda

#define BITSERVE_CUDA_RETURN_IF_ERROR(statement)                                   \
  do {                                                                             \
    ::absl::Status bitserve_cuda_status_ =                                         \
        ::bitserve::cuda::CudaStatus((statement), #statement, __FILE__, __LINE__); \
    if (!bitserve_cuda_status_.ok()) return bitserve_cuda_status_;                 \
  } while (0)
