#include "runtime/engine/pipeline_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {

absl::StatusOr<std::unique_ptr<PipelineEngine>> PipelineEngine::Load(
    const std::filesystem::path& model_dir, const EngineOptions& options, int num_stages) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(std::vector<PipelineStage> split,
                   options.local_pipeline_split.empty()
                       ? BalanceStages(config, num_stages)
                       : StagesFromSplit(config, num_stages, options.local_pipeline_split));
  std::vector<std::unique_ptr<Engine>> stages;
  for (const PipelineStage& stage : split) {
    EngineOptions o = options;
    o.stage = stage;
    // The stages share one device: each sizes its KV cache from what is free when it loads, so
    // give each an equal share of what the earlier ones left.
    o.kv_memory_fraction = options.kv_memory_fraction / (num_stages - stage.stage);
    ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, LoadEngine(model_dir, o));
    stages.push_back(std::move(engine));
  }
  return std::unique_ptr<PipelineEngine>(new PipelineEngine(std::move(stages)));
}

int PipelineEngine::num_kv_blocks() const {
  int blocks = stages_.front()->num_kv_blocks();
  for (const auto& s : stages_) blocks = std::min(blocks, s->num_kv_blocks());
  return blocks;
}

std::string PipelineEngine::device_name() const {
  return absl::StrCat(stages_.size(), "-stage pipeline (", stages_.front()->device_name(), ")");
}

absl::Status PipelineEngine::Run(std::span<const BatchEntry> entries,
                                 std::span<const SampleSpec> samples, std::vector<float>* logits,
                                 std::vector<SampleResult>* results) {
  for (auto& stage : stages_) {
    StageIo io;
    io.input = carry_;
    io.output = &next_;
    io.logits = logits;
    RETURN_IF_ERROR(stage->StageStep(entries, samples, io, results));
    std::swap(carry_, next_);
  }
  return absl::OkStatus();
}

absl::Status PipelineEngine::Forward(std::span<const BatchEntry> entries,
                                     std::vector<float>* logits) {
  return Run(entries, {}, logits, nullptr);
}

absl::Status PipelineEngine::Step(std::span<const BatchEntry> entries,
                                  std::span<const SampleSpec> samples,
                                  std::vector<SampleResult>* results) {
  return Run(entries, samples, nullptr, results);
}

}  // namespace bitserve
