// A pipeline of stage engines in one process: the stages of runtime/pipeline_stage.h chained
// through the transfer format with no transport in between. It computes exactly what a pipeline
// of worker processes computes (the same stage engines, the same int8/bf16 hidden states), so
// `bitserve generate --pipeline-stages S` is the single-process reference of a served pipeline,
// and the cost of the transfer format can be measured without a cluster.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace bitserve {

class PipelineEngine final : public Engine {
 public:
  // options.stage is ignored: the layers are split by BalanceStages into `num_stages`.
  static absl::StatusOr<std::unique_ptr<PipelineEngine>> Load(
      const std::filesystem::path& model_dir, const EngineOptions& options, int num_stages);

  const ModelConfig& config() const override { return stages_.front()->config(); }
  int block_size() const override { return stages_.front()->block_size(); }
  int num_kv_blocks() const override;
  int64_t max_model_len() const override { return stages_.front()->max_model_len(); }
  int max_batch_tokens() const override { return stages_.front()->max_batch_tokens(); }
  std::string device_name() const override;
  KvDtype kv_dtype() const override { return stages_.front()->kv_dtype(); }
  KvRotation kv_rotation() const override { return stages_.front()->kv_rotation(); }
  LmHeadDtype lm_head_dtype() const override { return stages_.back()->lm_head_dtype(); }

  absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) override;
  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override;

 private:
  explicit PipelineEngine(std::vector<std::unique_ptr<Engine>> stages)
      : stages_(std::move(stages)) {}
  absl::Status Run(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                   std::vector<float>* logits, std::vector<SampleResult>* results);

  std::vector<std::unique_ptr<Engine>> stages_;
  std::vector<uint8_t> carry_, next_;
};

}  // namespace bitserve
