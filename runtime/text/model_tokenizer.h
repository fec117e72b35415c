// The tokenizer of a checkpoint directory, checked against the model it feeds: every id the
// tokenizer can produce must be a row of the model's embedding. A tokenizer with more ids than
// config.json's vocab_size (another model's tokenizer.json copied in) is refused at load, so that
// no text can reach the engine as an id outside the vocabulary.
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {

// DIR/tokenizer.json (with tokenizer_config.json beside it when present); nullptr when the
// directory has no tokenizer.json. FAILED_PRECONDITION when its ids do not fit `config`.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const std::filesystem::path& dir,
                                                              const ModelConfig& config);

// The check LoadModelTokenizer makes; `source` names the tokenizer in the message.
absl::Status CheckTokenizerFitsModel(const Tokenizer& tokenizer, const ModelConfig& config,
                                     const std::string& source);

}  // namespace bitserve
