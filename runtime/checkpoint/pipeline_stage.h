// Pipeline parallelism (DESIGN.md "Parallelism"): which layers a stage holds, how the layers are
// balanced over stages, and how hidden states cross from one stage to the next.
//
// How hidden states cross stages (int8 + fp32 per-token scales, or bf16):
// kernels/hidden_transfer.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/hidden_transfer.h"
#include "runtime/checkpoint/model_config.h"

namespace bitserve {

struct PipelineStage {
  int stage = 0;
  int num_stages = 1;
  int layer_begin = 0;
  int layer_end = -1;  // exclusive; -1: every layer (the whole model)

  bool first() const { return stage == 0; }
  bool last() const { return stage == num_stages - 1; }
  bool whole_model() const { return num_stages == 1; }
  // InvalidArgument naming the field when the stage does not fit a model of `num_layers`.
  absl::Status Validate(int num_layers) const;
  // layer_end with -1 resolved.
  int end(int num_layers) const { return layer_end < 0 ? num_layers : layer_end; }
};

// Splits the layers into `num_stages` contiguous, non-empty ranges balanced by the bytes a decode
// step reads on each stage (2-bit ternary weights per layer; the bf16 LM head on the last stage,
// the embedding row gathers cost nothing): decode is bandwidth-bound. InvalidArgument when there
// are fewer layers than stages.
absl::StatusOr<std::vector<PipelineStage>> BalanceStages(const ModelConfig& config, int num_stages);

// An explicit split (`serve --pipeline-split 45,35`): stage s holds layers_per_stage[s] layers, in
// order. For the batch a deployment serves, where a step's time does not follow its bytes (at
// large batch the LM head costs about a layer, not the ~10 layers of bytes BalanceStages counts for
// 70B); bench/pipeline_stage_report.py suggests one from measured stage times. InvalidArgument
// unless there are num_stages counts, each >= 1, summing to the model's layers.
absl::StatusOr<std::vector<PipelineStage>> StagesFromSplit(
    const ModelConfig& config, int num_stages, const std::vector<int>& layers_per_stage);

// "45,35" -> {45, 35}; InvalidArgument naming the text otherwise.
absl::StatusOr<std::vector<int>> ParsePipelineSplit(absl::string_view text);

}  // namespace bitserve
