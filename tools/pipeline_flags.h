// --pipeline-stages / --pp-transfer / --pipeline-split for the one-process commands (generate,
// perplexity, logits): the layers split over stage engines chained in this process
// (runtime/pipeline_engine.h), which computes what a served pipeline (`bitserve serve
// --pipeline-stages S`) computes.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/checkpoint/pipeline_stage.h"
#include "runtime/engine/engine.h"

namespace bitserve::cli {

// `--pipeline-split TEXT` for a pipeline of `stages` stages (serve's and the one-process commands'
// flag): the layer counts, or InvalidArgument naming the flag. Whether the counts fit the model is
// StagesFromSplit's check.
inline absl::StatusOr<std::vector<int>> ParseSplitFlag(const std::string& text, int stages) {
  if (stages < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pipeline-split ", text, " needs --pipeline-stages of 2 or more"));
  }
  absl::StatusOr<std::vector<int>> layers = ParsePipelineSplit(text);
  if (!layers.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pipeline-split: ", layers.status().message()));
  }
  return layers;
}

struct PipelineFlags {
  int stages = 1;
  std::string transfer = "int8";
  std::string split;  // empty: balanced by decode bytes

  void Add(CLI::App* cmd) {
    cmd->add_option("--pipeline-stages", stages,
                    "Run the layers as this many pipeline stages in this process (a served "
                    "pipeline's numerics)");
    cmd->add_option("--pp-transfer", transfer,
                    "Hidden states between stages: int8 (default) or bf16");
    cmd->add_option("--pipeline-split", split,
                    "Layers per stage, e.g. 4,2 (as serve --pipeline-split; default: balanced by "
                    "decode bytes)");
  }
  absl::Status Apply(EngineOptions* options) const {
    if (stages < 1) return absl::InvalidArgumentError("--pipeline-stages must be >= 1");
    options->local_pipeline_stages = stages;
    ASSIGN_OR_RETURN(options->pp_transfer, ParseTransferDtype(transfer));
    if (!split.empty()) {
      ASSIGN_OR_RETURN(options->local_pipeline_split, ParseSplitFlag(split, stages));
    }
    return absl::OkStatus();
  }
};

}  // namespace bitserve::cli
