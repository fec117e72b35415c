// The CPU reference engine: BitNet b1.58's forward pass exactly as DESIGN.md specifies it (int8
// activations per token, int32 ternary products, float32 elsewhere), over a batch of sequences
// that each bring new tokens (prefill chunks and single decode tokens alike), with a paged KV cache
// (runtime/paged_kv_cache.h): float32 by default (the reference), or bf16/int8/int4 quantized on
// write and dequantized on read (EngineOptions::kv_dtype), which measures what those formats cost
// with everything else exact.
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

  absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) override;
  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override;
  const PipelineStage& stage() const override { return stage_; }
  absl::Status StageStep(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                         const StageIo& io, std::vector<SampleResult>* results) override;

 private:
  // x_ = the embedded tokens (first stage) or the decoded input, then the stage's layers.
  void Run(std::span<const BatchEntry> entries, std::span<const uint8_t> input);
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
  int64_t max_model_len_;
  int max_batch_tokens_;
  std::vector<float> inv_freq_;
  ActivationTrace trace_;
  MoeShape moe_shape_;
  // The batch of the current Run, for the blocks.
  std::span<const BatchEntry> entries_;
  int64_t tokens_ = 0;
  // Scratch, grown to the largest batch seen and reused.
  std::vector<float> x_, a_, q_, k_, v_, o_, logits_in_, step_logits_;
  MoeScratch ffn_scratch_;
  std::vector<float> kv_keys_, kv_values_;
  std::vector<int8_t> aq_;
  std::vector<float> scales_;
  std::vector<int32_t> positions_, ids_;
  std::unique_ptr<Sampler> sampler_;  // scratch of Step's sampling
};

}  // namespace bitserve
