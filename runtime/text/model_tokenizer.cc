#include "runtime/text/model_tokenizer.h"

#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {

absl::Status CheckTokenizerFitsModel(const Tokenizer& tokenizer, const ModelConfig& config,
                                     const std::string& source) {
  if (tokenizer.vocab_size() <= config.vocab_size) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(source, " has token ids up to ", tokenizer.vocab_size() - 1,
                   ", but the model's vocabulary (config.json vocab_size) is [0, ",
                   config.vocab_size, "): this tokenizer does not belong to this model"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const std::filesystem::path& dir,
                                                              const ModelConfig& config) {
  const std::filesystem::path path = dir / "tokenizer.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::unique_ptr<Tokenizer>();
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Load(dir));
  RETURN_IF_ERROR(CheckTokenizerFitsModel(*tokenizer, config, path.string()));
  return tokenizer;
}

}  // namespace bitserve
