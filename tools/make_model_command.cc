// bitserve make-model --preset NAME --out DIR [--seed N] [--layers N] [--max-shard-size BYTES]
//                     [--no-tokenizer] [--config-only] [--list]
#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"
#include "tools/command_line.h"

namespace bitserve::cli {

void AddMakeModelCommand(CLI::App& app) {
  struct Args {
    std::string preset, out;
    uint64_t seed = 0;
    int layers = 0;  // with --layers only
    uint64_t max_shard_bytes = 4ull << 30;
    bool list = false, no_tokenizer = false, config_only = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "make-model", "Write a deterministic random BitNet checkpoint in the Hugging Face format");
  cmd->add_option("--preset", args->preset, "Model shape (see --list)");
  cmd->add_option("--out", args->out, "Output directory");
  cmd->add_option("--seed", args->seed, "Random seed");
  CLI::Option* layers = cmd->add_option(
      "--layers", args->layers,
      "Number of layers instead of the preset's (same layer shapes: e.g. a few llama-70b "
      "layers to measure per-layer costs)");
  cmd->add_option("--max-shard-size", args->max_shard_bytes,
                  "Shard the safetensors above this many bytes (default 4 GiB)");
  cmd->add_flag("--list", args->list, "List the presets");
  cmd->add_flag(
      "--no-tokenizer", args->no_tokenizer,
      "Write no tokenizer files (clients send token ids), e.g. where node_modules is absent");
  cmd->add_flag("--config-only", args->config_only,
                "Write config.json, generation_config.json and the tokenizer but no weights: "
                "for --load-format dummy (shapes whose checkpoint would not fit a disk)");
  cmd->callback([args, layers] {
    RunOrExit("make-model", [&]() -> absl::Status {
      if (args->list) {
        for (const ModelPreset& p : ModelPresets())
          std::cout << p.name << "\t" << p.description << "\n";
        return absl::OkStatus();
      }
      if (args->preset.empty() || args->out.empty()) {
        return absl::InvalidArgumentError("--preset and --out are required");
      }
      if (args->max_shard_bytes == 0)
        return absl::InvalidArgumentError("--max-shard-size must be > 0");
      ASSIGN_OR_RETURN(ModelPreset preset, FindModelPreset(args->preset));
      if (args->no_tokenizer) preset.with_tokenizer = false;
      if (layers->count() > 0) {
        if (args->layers < 1) return absl::InvalidArgumentError("--layers must be >= 1");
        preset.config.num_hidden_layers = args->layers;
      }
      SyntheticCheckpointOptions options;
      options.seed = args->seed;
      options.max_shard_bytes = args->max_shard_bytes;
      options.config_only = args->config_only;
      auto start = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(WriteSyntheticCheckpoint(preset, args->out, options));
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cerr << "make-model: wrote " << preset.name << " (seed " << args->seed << ") to "
                << args->out << " in " << seconds << " s" << std::endl;
      return absl::OkStatus();
    });
  });
}

}  // namespace bitserve::cli
