// The single-GPU engine (runtime/engine.h on CUDA): the model's weights repacked for the kernels of
// kernels/cuda/, a paged KV cache (bf16 by default, or int8 / int4: EngineOptions::kv_dtype),
// scratch sized at load for options.max_batch_tokens (no device allocation per step), sampling on
// the device, and CUDA graphs for decode steps.
// Host-only header: it names no CUDA type, so engine.cc can include it in any build with
// BITSERVE_WITH_CUDA=1.
//
// Numerics against the CPU engine: every int8 quantization, int32 ternary sum and float epilogue
// is the CPU's operation for operation; RoPE uses host-computed cos/sin (bit-exact). What differs:
// keys and values are stored as bf16/int8/int4 (the CPU reference keeps float32; a CPU engine with
// the same kv_dtype stores the same bytes), attention accumulates in another order, the LM head
// multiplies a bf16-rounded activation (lm_head.cuh), and RMSNorm's float64 sum of squares is
// added in another order. Any of these can move an activation across an int8
// rounding boundary, after which the two engines differ by one quantization step in that element;
// tests/cuda_engine_test.cc states the resulting logit tolerance.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace bitserve {

// Knobs of the CUDA engine that EngineOptions does not carry (tests and benchmarks).
struct CudaEngineOptions {
  // Capture decode steps (every entry one token wanting logits) in CUDA graphs, one per batch
  // bucket and context bucket, after one plain run of that shape. Off: the same kernels launched
  // one by one (a decode batch is padded to its bucket either way, so both give identical bits).
  bool cuda_graphs = true;
};

absl::StatusOr<std::unique_ptr<Engine>> LoadCudaEngine(const std::filesystem::path& model_dir,
                                                       const EngineOptions& options);
absl::StatusOr<std::unique_ptr<Engine>> LoadCudaEngine(const std::filesystem::path& model_dir,
                                                       const EngineOptions& options,
                                                       const CudaEngineOptions& cuda_options);

// What one decode step of a loaded CUDA engine must read at least (for the bandwidth floor of
// bench/cuda/engine_benchmark): packed ternary weights, norms, the bf16 LM head, the embedding
// rows; KV bytes per cached position (all layers, keys and values, data and params). Null when
// `engine` is not a CUDA engine.
struct CudaEngineFootprint {
  int64_t ternary_weight_bytes = 0;  // all of them, the routed experts' included
  int64_t expert_weight_bytes = 0;   // the routed experts' (MoE): a step reads those it routes to
  int64_t lm_head_bytes = 0;
  int64_t norm_bytes = 0;
  int64_t kv_bytes_per_position = 0;
  int64_t kv_cache_bytes = 0;
  int64_t scratch_bytes = 0;
};
const CudaEngineFootprint* GetCudaEngineFootprint(const Engine& engine);

}  // namespace bitserve
