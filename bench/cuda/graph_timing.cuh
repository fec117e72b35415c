// What the CUDA benchmarks share: random device data (never zeros, so no kernel gets an easy
// case) and the graph timer: a call captured many times back to back into one CUDA graph (no
// launch gaps), replayed after warm-up; the median replay over the calls in it is the time of one
// call. Callers rotate over weight copies so that the 50 MB L2 cannot hold them.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/status_macros.h"

namespace bitserve::cuda {

__device__ inline uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void FillRandomWords(uint32_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = static_cast<uint32_t>(Mix(seed ^ (i * 0x100000001b3ull)));
  }
}

// Packed ternary words with codes 0, 1, 2 (each 2-bit field).
__global__ void FillTernaryWords(uint32_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t h = Mix(seed ^ (i * 0x100000001b3ull));
    uint32_t word = 0;
    for (int f = 0; f < 16; ++f, h >>= 4) word |= static_cast<uint32_t>((h & 15) % 3) << (2 * f);
    p[i] = word;
  }
}

inline uint64_t g_seed = 0x5eed;
constexpr int kFillBlocks = 132 * 8;

inline absl::Status RandomWords(void* p, int64_t bytes) {
  FillRandomWords<<<kFillBlocks, 256>>>(static_cast<uint32_t*>(p), bytes / 4, ++g_seed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// ---- timing ----------------------------------------------------------------------------------

// Median time of one call, in microseconds. call(i) issues call number i on `stream` (i picks the
// weight copy). Calls are captured into a graph of `reps` calls so that launch gaps vanish.
inline absl::StatusOr<double> TimePerCall(const std::function<absl::Status(int)>& call, int copies,
                                   cudaStream_t stream) {
  for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(call(i));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
  for (int i = 0; i < copies; ++i) RETURN_IF_ERROR(call(i));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
  float estimate_ms = 0;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&estimate_ms, start, stop));
  const double estimate_us = std::max(1e-3, 1000.0 * estimate_ms / copies);
  // ~500 us of work per replay, whole rotations of the copies.
  int reps = static_cast<int>(std::clamp(500.0 / estimate_us, 1.0, 1024.0));
  reps = std::max(copies, (reps + copies - 1) / copies * copies);

  cudaGraph_t graph;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  absl::Status captured = absl::OkStatus();
  for (int i = 0; i < reps && captured.ok(); ++i) captured.Update(call(i));
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  RETURN_IF_ERROR(captured);
  BITSERVE_CUDA_RETURN_IF_ERROR(end);
  cudaGraphExec_t exec;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 2; ++i) BITSERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, stream));
  std::vector<float> ms;
  const int replays = estimate_us * reps > 20000 ? 5 : 15;
  for (int i = 0; i < replays; ++i) {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float t = 0;
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return 1000.0 * ms[ms.size() / 2] / reps;
}

}  // namespace bitserve::cuda
