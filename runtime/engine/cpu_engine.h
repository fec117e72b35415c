// The CPU reference engine: BitNet b1.58's forward pass exactly as DESIGN.md specifies it (int8
// activations per token, int32 ternary products, float32 elsewhere), over a batch of sequences
// that each bring new tokens (prefill chunks and single decode tokens alike), with a paged KV cache
// (runtime/paged_kv_cache.h): float32 by default (the reference), or bf16/int8/int4 quantized on
// write and dequantized on read (EngineOptions::kv_dtype), which measures what those formats cost
// with everything else exact. q and k may be Hadamard-rotated per head before the cache
// (EngineOptions::kv_rotation; the default for int8 and int4).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/model_weights.h"
#include "runtime/engine/decoder_layer.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/paged_kv_cache.h"

namespace bitserve {

class CpuEngine : public Engine, private DecoderBlocks {
 public:
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Load(const std::filesystem::path& model_dir,
                                                         const EngineOptions& options = {});
  // `options` must have passed ResolveCpuOptions (Load does it).
  CpuEngine(ModelWeights weights, const EngineOptions& options);

  const ModelConfig& config() const override { return weights_.config; }
  int block_size() const override { return kv_.block_size(); }
  int num_kv_blocks() const override { return kv_.num_blocks(); }
  int64_t max_model_len() const override { return max_model_len_; }
  int max_batch_tokens() const override { return max_batch_tokens_; }
  std::string device_name() const override { return "cpu"; }
  KvDtype kv_dtype() const override { return kv_.dtype(); }
  KvRotation kv_rotation() const override { return kv_rotation_; }
  LmHeadDtype lm_head_dtype() const override { return lm_head_dtype_; }

  absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) override;
  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override;
  const PipelineStage& stage() const override { return stage_; }
  absl::Status StageStep(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                         const StageIo& io, std::vector<SampleResult>* results) override;
  std::span<const int64_t> last_step_expert_rows() const override { return expert_rows_; }

 private:
  // x_ = the embedded tokens (first stage) or the decoded input, then the stage's layers. Fails
  // only when an expert exchange does.
  absl::Status Run(std::span<const BatchEntry> entries, std::span<const uint8_t> input);
  // The batch checked against the engine's limits (ValidateBatch); an expert-parallel rank also
  // accepts an empty one.
  absl::Status Validate(std::span<const BatchEntry> entries) const;
  // An expert-parallel rank whose batch was refused still takes part in the step's exchanges,
  // with no tokens, so that its peers are not left waiting; returns `refused`.
  absl::Status Refuse(absl::Status refused);
  // The MoE block of an expert-parallel rank: route, send rows to their experts' owners, run the
  // rows sent here, take the results back, combine (as cpu::MoeFeedForward, bit for bit).
  absl::Status ExpertParallelMoe(int layer, const float* n, int64_t m, float* out);
  // Final norm and LM head for the rows the entries want.
  void Logits(std::span<const BatchEntry> entries, std::vector<float>* logits);
  // Samples one token per kLast entry from the logits of Logits() (kAll entries are not sampled).
  absl::Status Sample(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                      std::vector<SampleResult>* results);
  // The blocks of one decoder layer (decoder_layer.h) over the batch of the current Run.
  absl::Status Attention(int layer) override;
  absl::Status DenseFfn(int layer) override;
  absl::Status MoeFfn(int layer) override;
  // Writes the layer's keys and values into the cache and attends, one sequence at a time.
  void SelfAttention(int layer);

  ModelWeights weights_;
  PipelineStage stage_;
  TransferDtype transfer_;
  PagedKvCache kv_;
  KvRotation kv_rotation_;  // of q and k before the cache (kernels/cpu/hadamard.h)
  LmHeadDtype lm_head_dtype_;
  // --lm-head-dtype int8: the LM head as int8 [vocab, hidden] and a multiplier per vocabulary row
  // (cpu::QuantizeBf16RowsInt8); empty otherwise.
  std::vector<int8_t> lm_head_int8_;
  std::vector<float> lm_head_scales_;
  int64_t max_model_len_;
  int max_batch_tokens_;
  RopeFrequencies rope_;
  ActivationTrace trace_;
  MoeShape moe_shape_;
  std::vector<int32_t> expert_owner_;                // empty without expert parallelism
  std::shared_ptr<ExpertExchange> expert_exchange_;  // null without expert parallelism
  std::vector<int64_t> expert_rows_;                 // last_step_expert_rows()
  // Expert-parallel scratch (cpu_expert_parallel.cc).
  struct ExpertParallelScratch {
    std::vector<int64_t> send_counts, recv_counts;
    std::vector<int32_t> send_slots;  // the slot (row * k + j) of each row sent, as sent
    std::vector<int8_t> send_values, recv_values;
    std::vector<float> send_scales, recv_scales, results, back;
    std::vector<int32_t> send_experts, recv_experts;
    std::vector<uint16_t> results_bf16, back_bf16;
  };
  ExpertParallelScratch ep_;
  // The batch of the current Run, for the blocks.
  std::span<const BatchEntry> entries_;
  int64_t tokens_ = 0;
  // Scratch, grown to the largest batch seen and reused.
  std::vector<float> x_, a_, q_, k_, v_, o_, logits_in_, step_logits_;
  MoeScratch ffn_scratch_;
  std::vector<float> kv_keys_, kv_values_;
  std::vector<int8_t> aq_, logits_in_int8_;
  std::vector<float> scales_, logits_in_scales_;
  std::vector<int32_t> positions_, ids_;
  std::unique_ptr<Sampler> sampler_;  // scratch of Step's sampling
};

}  // namespace bitserve
