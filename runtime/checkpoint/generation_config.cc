#include "runtime/checkpoint/generation_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace bitserve {

absl::StatusOr<GenerationConfig> ParseGenerationConfig(absl::string_view json_text,
                                                       absl::string_view source, int vocab_size) {
  nlohmann::json root = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  GenerationConfig config;
  auto it = root.find("eos_token_id");
  if (it == root.end() || it->is_null()) return config;
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"eos_token_id\" must be a token id in [0, ", vocab_size,
                     ") or a list of them, got ", it->dump()));
  };
  std::vector<nlohmann::json> values =
      it->is_array() ? it->get<std::vector<nlohmann::json>>() : std::vector<nlohmann::json>{*it};
  for (const nlohmann::json& v : values) {
    if (!v.is_number_integer()) return bad();
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id >= vocab_size) return bad();
    config.eos_token_ids.push_back(static_cast<int>(id));
  }
  return config;
}

absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::filesystem::path& dir,
                                                      const ModelConfig& model) {
  const std::filesystem::path path = dir / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return GenerationConfig{model.eos_token_ids};
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseGenerationConfig(text, path.string(), model.vocab_size);
}

}  // namespace bitserve
