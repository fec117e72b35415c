// Asynchronous global -> shared copies (cp.async, sm_80+), shared by the kernels that stage tiles
// in shared memory (paged_attention_prefill.cu, ternary_tiled_gemm.cu, ternary_wgmma_gemm.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace bitserve::cuda::internal {

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1. Only the first src_bytes are read; the rest of the 16
// are zeroed (0: nothing is read). Padding rows of a tile use 0 rather than a copy of some valid
// row: many lanes reading one address serialize.
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)),
               "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace bitserve::cuda::internal
