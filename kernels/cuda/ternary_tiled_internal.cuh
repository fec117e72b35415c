// What the tiled ternary kernels share between their translation units: the launch arguments,
// and the entry into the wgmma kernels (ternary_wgmma_gemm.cu, compiled only for sm_90a).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace bitserve::cuda::internal {

struct TiledArgs {
  const uint8_t* w;  // packed tiles, ternary_layout.h order
  int k_tiles, row_tiles, rows;
  const int8_t* x;
  int64_t x_stride;
  const int32_t* x_sum;
  const float* x_scale;
  int m;
  int scale_mode;
  float scale_value;
  float* y;      // float output, or
  int32_t* acc;  // int32 output
};

// Whether the wgmma kernels are in this build (CMAKE_CUDA_ARCHITECTURES names 90).
bool WgmmaCompiled();
// Writes x [m, stride] (k_tiles of 128 bytes per row used) to out [m, stride] in the k order of
// the wgmma kernels' B operand (ternary_wgmma_gemm.cu); the wgmma kernels read `out`.
cudaError_t PermuteActivationsForWgmma(const int8_t* x, int64_t stride, int m, int k_tiles,
                                       int8_t* out, cudaStream_t stream);
// a.x: activations permuted by PermuteActivationsForWgmma. cudaErrorInvalidValue for a shape
// that is not compiled in.
cudaError_t LaunchTernaryWgmma(int warpgroups, int tokens, int stages, int min_blocks,
                               const TiledArgs& a, cudaStream_t stream);

}  // namespace bitserve::cuda::internal
