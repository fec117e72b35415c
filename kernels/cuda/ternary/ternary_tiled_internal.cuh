// The entry into the wgmma kernels (ternary_wgmma_gemm.cu, compiled only for sm_90a) from the
// tiled product's launcher (ternary_tiled_gemm.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "kernels/cuda/ternary/ternary_kernel_common.cuh"
#include "kernels/cuda/ternary/ternary_tiled_gemm.cuh"

namespace bitserve::cuda::internal {

// Whether the wgmma kernels are in this build (CMAKE_CUDA_ARCHITECTURES names 90).
bool WgmmaCompiled();
// Writes x [m, stride] (k_tiles of 128 bytes per row used) to out [m, stride] in the k order of
// the wgmma kernels' B operand (ternary_wgmma_gemm.cu); the wgmma kernels read `out`.
cudaError_t PermuteActivationsForWgmma(const int8_t* x, int64_t stride, int m, int k_tiles,
                                       int8_t* out, cudaStream_t stream);
// a.x: activations permuted by PermuteActivationsForWgmma. cudaErrorInvalidValue for a shape
// that is not compiled in.
cudaError_t LaunchTernaryWgmma(int warpgroups, int tokens, int stages, int min_blocks,
                               const TernaryProductArgs& a, cudaStream_t stream);
// The grouped tiled products (ternary_grouped_gemv.cuh): the configurations compiled in, and the
// launch of one (cudaErrorInvalidValue for one that is not, or whose token blocks do not divide
// rows_per_item).
const std::vector<TernaryTiledConfig>& GroupedTiledConfigs();
cudaError_t LaunchGroupedTiled(const TernaryTiledConfig& config, const TernaryProductArgs& a,
                               const ExpertGroupsArgs& g, int rows_per_item, int max_items,
                               cudaStream_t stream);

}  // namespace bitserve::cuda::internal
