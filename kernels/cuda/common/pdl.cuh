// Programmatic dependent launch (PDL, sm_90): a kernel launched with LaunchDependent may start
// while the kernel before it in the stream is still running, once every block of that one has
// called AllowDependentLaunch (or exited). It overlaps a kernel's launch and the start of its
// blocks with the previous kernel's tail, which matters in batch-1 decode: a llama-70b layer is
// twelve kernels, most of them a few microseconds long (docs/perf.md).
//
// The contract of a kernel launched with LaunchDependent:
//   - before WaitForPrerequisites() it reads only memory that nothing in the stream writes (the
//     weights), and writes nothing: the previous kernel, and the one before it, may still run;
//   - WaitForPrerequisites() returns once the previous kernel has completed and its writes are
//     visible (that kernel waited for its own predecessor, so all earlier work is done too);
//   - it calls AllowDependentLaunch() after WaitForPrerequisites(), so at most one kernel waits
//     ahead of the running one and holds resources.
// Launched without the attribute (another GPU, BITSERVE_PDL=0), both device calls do nothing.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace bitserve::cuda {

__device__ __forceinline__ void WaitForPrerequisites() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether LaunchDependent asks for early launch: the current device is sm_90 or later and the
// environment does not say BITSERVE_PDL=0 (read once; for comparing timings and as a way out).
bool DependentLaunchEnabled();

// Launches `kernel` (which keeps the contract above) with the PDL attribute when enabled, and
// with `cluster_x` > 1 as clusters of that many blocks along x.
template <typename... Params, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                            cudaStream_t stream, int cluster_x, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attributes[2];
  int n = 0;
  if (DependentLaunchEnabled()) {
    attributes[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 1) {
    attributes[n].id = cudaLaunchAttributeClusterDimension;
    attributes[n].val.clusterDim.x = static_cast<unsigned>(cluster_x);
    attributes[n].val.clusterDim.y = 1;
    attributes[n].val.clusterDim.z = 1;
    ++n;
  }
  config.attrs = attributes;
  config.numAttrs = static_cast<unsigned>(n);
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace bitserve::cuda
