// generation_config.json: the model's stop tokens (2B4T: 128001 <|end_of_text|> and
// 128009 <|eot_id|>). Optional: without the file, config.json's eos_token_id applies.
#pragma once

#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/checkpoint/model_config.h"

namespace bitserve {

struct GenerationConfig {
  std::vector<int> eos_token_ids;
};

absl::StatusOr<GenerationConfig> ParseGenerationConfig(absl::string_view json_text,
                                                       absl::string_view source, int vocab_size);

// DIR/generation_config.json when present, else the eos ids of `model`.
absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::filesystem::path& dir,
                                                      const ModelConfig& model);

}  // namespace bitserve
