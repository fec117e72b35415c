#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/norm/fused_norm_quantize.cuh"
#include "kernels/cuda/norm/residual_norm.cuh"

namespace bitserve::cuda {
namespace {

__global__ void AddKernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = __fadd_rn(x[i], y[i]);
  }
}

struct ResidualProducer {
  float4* x;
  const float4* y;
  int dim4;
  __device__ float4 Load(int64_t row, int i) const {
    const int64_t at = row * dim4 + i;
    float4 a = x[at];
    const float4 b = __ldg(y + at);
    a.x = __fadd_rn(a.x, b.x);
    a.y = __fadd_rn(a.y, b.y);
    a.z = __fadd_rn(a.z, b.z);
    a.w = __fadd_rn(a.w, b.w);
    x[at] = a;
    return a;
  }
};

}  // namespace

absl::Status AddResidual(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 132 * 8);
  AddKernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(x, y, n);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status AddRmsNormQuantize(float* x, const float* y, const float* weight, int64_t rows,
                                int64_t dim, float eps, const Int8ActivationsOut& out,
                                float* normed, cudaStream_t stream) {
  if (absl::Status s = internal::ValidateFusedRow("AddRmsNormQuantize", rows, dim, out); !s.ok()) {
    return s;
  }
  const ResidualProducer producer{reinterpret_cast<float4*>(x), reinterpret_cast<const float4*>(y),
                                  static_cast<int>(dim / 4)};
  return internal::LaunchFusedNormQuantize<true>(producer, weight, rows, dim, eps, out, normed,
                                                 stream);
}

}  // namespace bitserve::cuda
