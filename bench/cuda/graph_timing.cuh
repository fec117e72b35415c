// What the CUDA benchmarks share: random device data (never zeros, so no kernel gets an easy
// case) and the graph timer: a call captured many times back to back into one CUDA graph (no
// launch gaps), replayed after warm-up; the median replay over the calls in it is the time of one
// call. Callers rotate over weight copies so that the 50 MB L2 cannot hold them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/cuda_check.cuh"

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

// Uniform in [-scale, scale).
__global__ void FillBf16(__nv_bfloat16* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = Mix(seed ^ (i * 0x100000001b3ull));
    const float u = static_cast<float>(h >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
    p[i] = __float2bfloat16(u * scale);
  }
}

// Uniform in [-scale, scale).
__global__ void FillRandomFloat(float* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = Mix(seed ^ (i * 0x100000001b3ull));
    p[i] = (static_cast<float>(h >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f) * scale;
  }
}

// Streams `n` uint4 through registers (the read-bandwidth ceiling); one word per block keeps the
// loads alive.
__global__ void ReadStream(const uint4* __restrict__ p, int64_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;  // practically never; not removable
}

inline uint64_t g_seed = 0x5eed;
constexpr int kFillBlocks = 132 * 8;

inline absl::Status RandomWords(void* p, int64_t bytes) {
  FillRandomWords<<<kFillBlocks, 256>>>(static_cast<uint32_t*>(p), bytes / 4, ++g_seed);
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// ---- timing ----------------------------------------------------------------------------------

// Device-to-device copy of 1 GiB, counting bytes read + written (docs/perf.md's "copy"): the
// bandwidth the benchmarks' floors divide by. Median of 8 copies after 2 warm-up copies.
inline double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(start);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= 2) times.push_back(ms);
  }
  cudaFree(a);
  cudaFree(b);
  std::sort(times.begin(), times.end());
  return 2.0 * bytes / (times[times.size() / 2] * 1e-3);
}

// How much work one graph replay holds and how many replays the median is over.
struct GraphTiming {
  double replay_us = 500;  // calls per graph: about this much work, whole rotations of the copies
  double max_calls = 1024;
  int replays = 15;  // 5 when one replay takes more than 20 ms
};

// Median time of one call, in microseconds. call(i) issues call number i on `stream` (i picks the
// weight copy). Calls are captured into a graph of `reps` calls so that launch gaps vanish.
inline absl::StatusOr<double> TimePerCall(const std::function<absl::Status(int)>& call, int copies,
                                          cudaStream_t stream, const GraphTiming& timing = {}) {
  for (int i = 0; i < std::max(3, copies); ++i) RETURN_IF_ERROR(call(i));
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
  int reps = static_cast<int>(std::clamp(timing.replay_us / estimate_us, 1.0, timing.max_calls));
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
  const int replays = estimate_us * reps > 20000 ? std::min(5, timing.replays) : timing.replays;
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
