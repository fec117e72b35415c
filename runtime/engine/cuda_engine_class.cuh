// The CudaEngine class (runtime/engine/cuda_engine.h is its public face): shared by
// cuda_engine.cu (load, steps, the dense and MoE decoder blocks) and cuda_expert_parallel.cu (the
// MoE block of an expert-parallel rank). Internal to the CUDA engine library.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/common/pinned_buffer.cuh"
#include "kernels/cuda/head/int8_lm_head.cuh"
#include "kernels/cuda/head/lm_head.cuh"
#include "kernels/cuda/head/sampling.cuh"
#include "kernels/cuda/moe/moe_ffn.cuh"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "runtime/engine/cuda_engine.h"
#include "runtime/engine/cuda_model.cuh"

namespace bitserve {

// The sizes one run of the layers is launched with (upper bounds for a captured graph).
struct RunShape {
  int tokens = 0;       // rows every kernel processes (a decode bucket pads)
  int entries = 0;      // entries of the attention batch (host bound)
  int logit_rows = 0;   // rows the LM head computes inside RunLayers (0: none)
  int max_context = 0;  // attention's bound
  int max_prefill_tokens = -1;
};

// The engine's buffers, all allocated at load (at least one element, so a view is never null).
template <typename T>
absl::Status Alloc(cuda::DeviceBuffer<T>* b, int64_t n) {
  ASSIGN_OR_RETURN(*b, cuda::DeviceBuffer<T>::Create(std::max<int64_t>(n, 1)));
  return absl::OkStatus();
}
template <typename T>
absl::Status Alloc(cuda::PinnedBuffer<T>* b, int64_t n) {
  ASSIGN_OR_RETURN(*b, cuda::PinnedBuffer<T>::Create(std::max<int64_t>(n, 1)));
  return absl::OkStatus();
}

// An expert-parallel rank's tables, buffers and staging (cuda_expert_parallel.cu).
struct CudaExpertParallel {
  int ranks = 1;
  std::vector<int32_t> owner;  // [num_experts]: the EP rank holding each expert
  std::vector<int32_t> held;   // this rank's experts (global ids): local index -> global id
  // Pairs are keyed by their expert's place in owner-major order, so that grouping by key groups
  // them by destination rank: rank p's keys are [first_key[p], first_key[p + 1]).
  std::vector<int32_t> first_key;
  cuda::DeviceBuffer<int32_t> key_of_expert, expert_of_key, local_index;  // [num_experts]
  int64_t row_bytes = 0;  // a dispatched row: PaddedInputs(hidden) int8 values
  int64_t max_pairs = 0;  // rows a rank sends or receives at most: max_batch_tokens * top_k
  ExpertResultDtype result_dtype = ExpertResultDtype::kF32;
  // The sender's grouping of its pairs by key (moe_routing.cuh's ExpertGrouping over keys).
  cuda::DeviceBuffer<int32_t> keys, key_rows, source_rows, row_key, pair_rows, num_items;
  cuda::DeviceBuffer<cuda::GroupedProductItem> items;
  cuda::DeviceBuffer<int8_t> send_values, recv_values;
  cuda::DeviceBuffer<float> send_scales, recv_scales;
  cuda::DeviceBuffer<int32_t> send_experts, recv_experts, recv_sums, recv_local, bad;
  cuda::DeviceBuffer<uint8_t> results, back;  // [max_pairs, hidden] of result_dtype
  cuda::PinnedBuffer<int32_t> host_key_rows, host_expert_rows, host_bad;
  std::vector<int64_t> send_counts, recv_counts;
  // Host copies of the rows for an exchange that moves host memory (TCP): empty otherwise.
  std::vector<uint8_t> host_send, host_recv, host_results, host_back;
};

class CudaEngine final : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<CudaEngine>> Load(const std::filesystem::path& model_dir,
                                                          const EngineOptions& options,
                                                          const CudaEngineOptions& cuda_options);
  ~CudaEngine() override;

  const ModelConfig& config() const override { return w_.config; }
  int block_size() const override { return block_size_; }
  int num_kv_blocks() const override { return num_kv_blocks_; }
  int64_t max_model_len() const override { return max_model_len_; }
  int max_batch_tokens() const override { return max_batch_tokens_; }
  std::string device_name() const override { return device_name_; }
  KvDtype kv_dtype() const override { return kv_dtype_; }
  KvRotation kv_rotation() const override { return kv_rotation_; }
  LmHeadDtype lm_head_dtype() const override { return lm_head_dtype_; }
  const PipelineStage& stage() const override { return w_.stage; }

  absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) override;
  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override;
  absl::Status StageStep(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                         const StageIo& io, std::vector<SampleResult>* results) override;
  absl::StatusOr<DeviceStageBuffers> device_stage_buffers() override;

  const CudaEngineFootprint& footprint() const { return footprint_; }
  std::span<const int64_t> last_step_expert_rows() const override { return expert_rows_; }

 private:
  CudaEngine() = default;
  absl::Status Init(const std::filesystem::path& model_dir, const EngineOptions& options,
                    const CudaEngineOptions& cuda_options);

  // Stages the batch's metadata and copies it to the device. `logit_rows` are flattened token
  // indices; a decode step pads tokens (and logit rows) to `padded_tokens`.
  absl::Status UploadBatch(std::span<const BatchEntry> entries,
                           const std::vector<int32_t>& logit_rows, int padded_tokens);
  // The stage's layers (RunDecoderLayers over LayerRun, its decoder blocks), the LM head's first
  // chunk on the last stage or the message for the next stage.
  class LayerRun;
  absl::Status RunLayers(const RunShape& shape);
  absl::Status LmHead(int row_begin, int rows, cudaStream_t stream);
  // Runs the layers for a batch (graph or plain); the LM head rows [0, min(R, kLogitsChunk)) are
  // computed when `shape.logit_rows` > 0.
  absl::Status Run(std::span<const BatchEntry> entries, const std::vector<int32_t>& logit_rows,
                   bool want_logits_rows);
  // Forward and Step of a validated batch (the last stage's StageStep too).
  absl::Status ComputeLogits(std::span<const BatchEntry> entries, std::vector<float>* logits);
  absl::Status Sample(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                      std::vector<SampleResult>* results);

  CudaModelWeights w_;
  int device_ = 0;
  std::string device_name_;
  int block_size_ = 16, num_kv_blocks_ = 0, max_batch_tokens_ = 0, max_blocks_per_seq_ = 0;
  int64_t max_model_len_ = 0;
  KvDtype kv_dtype_ = KvDtype::kBf16;
  KvRotation kv_rotation_ = KvRotation::kNone;  // of q and k before the cache (hadamard_rotate.cuh)
  LmHeadDtype lm_head_dtype_ = LmHeadDtype::kBf16;
  bool use_graphs_ = true;
  TransferDtype transfer_ = TransferDtype::kInt8;
  cudaStream_t stream_ = nullptr;
  CudaEngineFootprint footprint_;

  // Kernel helpers.
  std::unique_ptr<cuda::TernaryGemm> gemm_;
  std::unique_ptr<cuda::Bf16LmHead> lm_head_;
  // --lm-head-dtype int8 (int8_lm_head.cuh): the quantized head, its kernels and the normed rows.
  cuda::Int8LmHeadWeights lm_head_int8_;
  std::unique_ptr<cuda::Int8LmHead> int8_lm_head_;
  cuda::DeviceBuffer<int8_t> lm_in_int8_;
  cuda::DeviceBuffer<float> lm_in_scales_;
  std::unique_ptr<cuda::GpuSampler> sampler_;

  // KV cache: one allocation; per layer the planes of paged_attention.cuh (k data, v data, k
  // params, v params), each padded to 256 bytes.
  cuda::DeviceBuffer<uint8_t> kv_;
  std::vector<cuda::PagedKvLayer> kv_layers_;

  // Scratch for max_batch_tokens tokens.
  int64_t act_stride_ = 0;
  cuda::DeviceBuffer<float> x_, y_, q_, k_, v_, attn_, logits_, cos_sin_;
  cuda::DeviceBuffer<int32_t> acc_qkv_, acc_gate_up_;
  cuda::DeviceBuffer<int8_t> act_values_[2];
  cuda::DeviceBuffer<float> act_scales_[2];
  cuda::DeviceBuffer<int32_t> act_sums_[2];
  cuda::DeviceBuffer<uint16_t> lm_in_;
  cuda::DeviceBuffer<uint8_t> attn_workspace_;
  // Pipeline stages: the previous stage's message (not on the first), this stage's (not on the
  // last).
  cuda::DeviceBuffer<uint8_t> stage_in_, stage_out_;
  // MoE models: the post-attention norm's float output (the router's input) and the MoE block's
  // scratch.
  MoeShape moe_shape_;
  cuda::DeviceBuffer<float> moe_in_;
  std::optional<cuda::MoeFfnScratch> moe_scratch_;

  // Batch metadata: pinned staging and its fixed device copy.
  struct Metadata {
    cuda::PinnedBuffer<int32_t> tokens, positions, token_entry, token_begin, start, logit_rows,
        block_tables, counts;
  } host_;
  struct DeviceMetadata {
    cuda::DeviceBuffer<int32_t> tokens, positions, token_entry, token_begin, start, logit_rows,
        block_tables, counts;
  } dev_;

  // Expert parallelism (EngineOptions::expert_exchange; null without it): the MoE block's rows go
  // to and from the ranks owning their experts (cuda_expert_parallel.cu). No decode buckets or
  // graphs then: the exchange needs the host between a layer's kernels.
  std::shared_ptr<ExpertExchange> expert_exchange_;
  std::unique_ptr<CudaExpertParallel> ep_;
  std::vector<int64_t> expert_rows_;  // last_step_expert_rows(): [layer][expert]
  absl::Status InitExpertParallel(const EngineOptions& options, std::vector<int32_t> held);
  // The MoE block of layer `layer` for nq.rows tokens (may be 0): n, nq its float and int8 input,
  // out [nq.rows, hidden] its output.
  absl::Status ExpertParallelMoe(int layer, const float* n, const cuda::Int8Activations& nq,
                                 float* out);
  // A step with no tokens on this rank: every MoE layer's exchanges, nothing else.
  absl::Status EmptyExpertParallelStep();
  // ValidateBatch; an empty batch is valid under expert parallelism.
  absl::Status Validate(std::span<const BatchEntry> entries) const;
  // `refused`, after taking part in the step with no tokens under expert parallelism (the other
  // ranks are not left waiting on this one).
  absl::Status Refuse(absl::Status refused);

  // Decode graphs by (batch bucket, context bucket).
  std::map<std::pair<int, int>, cudaGraphExec_t> graphs_;
};

}  // namespace bitserve
