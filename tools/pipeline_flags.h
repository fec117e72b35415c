// --pipeline-stages / --pp-transfer for the one-process commands (generate, perplexity, logits):
// the layers split over stage engines chained in this process (runtime/pipeline_engine.h), which
// computes what a served pipeline (`bitserve serve --pipeline-stages S`) computes.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "base/status_macros.h"
#include "runtime/engine/engine.h"

namespace bitserve::cli {

struct PipelineFlags {
  int stages = 1;
  std::string transfer = "int8";

  void Add(CLI::App* cmd) {
    cmd->add_option("--pipeline-stages", stages,
                    "Run the layers as this many pipeline stages in this process (a served "
                    "pipeline's numerics)");
    cmd->add_option("--pp-transfer", transfer,
                    "Hidden states between stages: int8 (default) or bf16");
  }
  absl::Status Apply(EngineOptions* options) const {
    if (stages < 1) return absl::InvalidArgumentError("--pipeline-stages must be >= 1");
    options->local_pipeline_stages = stages;
    ASSIGN_OR_RETURN(options->pp_transfer, ParseTransferDtype(transfer));
    return absl::OkStatus();
  }
};

}  // namespace bitserve::cli
