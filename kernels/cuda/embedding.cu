#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"

namespace bitserve::cuda {
namespace {

// One block per row. bf16 is the upper half of a float32: widening is a shift.
__global__ void EmbeddingKernel(const uint16_t* __restrict__ table, int64_t dim,
                                const int32_t* __restrict__ ids, float* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const uint16_t* src = table + static_cast<int64_t>(ids[row]) * dim;
  float* dst = out + row * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    dst[i] = __uint_as_float(static_cast<uint32_t>(__ldg(src + i)) << 16);
  }
}

}  // namespace

absl::Status EmbeddingLookup(const uint16_t* table, int64_t dim, const int32_t* ids, int64_t rows,
                             float* out, cudaStream_t stream) {
  if (dim <= 0 || rows < 0 || rows > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("EmbeddingLookup: bad shape [", rows, ", ", dim, "]"));
  }
  if (rows == 0) return absl::OkStatus();
  EmbeddingKernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(table, dim, ids, out);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
