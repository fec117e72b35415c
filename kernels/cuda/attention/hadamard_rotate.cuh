// The Hadamard rotation of q and k per attention head (EngineOptions::kv_rotation) on the GPU: the
// float q and k of a batch, after the q/k/v epilogue's RoPE and before WritePagedKv and paged
// attention. Reference: kernels/cpu/hadamard.h's HadamardRotateRows, which defines the arithmetic
// (the butterfly stages in order, one multiply by HadamardNorm); this kernel does the same float
// operations with explicit round-to-nearest intrinsics, so q and k are bit-exact against it.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "kernels/cuda/attention/paged_attention.cuh"

namespace bitserve::cuda {

// q: [tokens][num_heads][head_dim], k: [tokens][num_kv_heads][head_dim] float32, both rotated in
// place in one launch, for tokens [0, count): count is *batch.device_num_tokens when set (a graph
// replay of a bucket reads the step's true count), else batch.num_tokens, which bounds the grid;
// rows past the count are left as they are. An odd head_dim is the identity (nothing launched).
// InvalidArgument for null buffers or a head_dim outside [1, kMaxHadamardHeadDim].
inline constexpr int kMaxHadamardHeadDim = 4096;
absl::Status HadamardRotateQk(float* q, float* k, int num_heads, int num_kv_heads, int head_dim,
                              const AttentionBatch& batch, cudaStream_t stream);

}  // namespace bitserve::cuda
