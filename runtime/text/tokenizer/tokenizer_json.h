// Reading Hugging Face tokenizer.json (and tokenizer_config.json) into a plain description of a
// byte-level BPE tokenizer. Everything the LLaMA-3 family does not use is refused with an error
// naming the field, rather than approximated.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitserve {

struct AddedTokenSpec {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;      // the match also takes the whitespace before it
  bool rstrip = false;      // the match also takes the whitespace after it
  bool normalized = false;  // matched after normalization (a second pass; no normalizer here)
};

struct TokenizerSpec {
  // model.vocab, in file order: byte-level string -> id.
  std::vector<std::pair<std::string, int32_t>> vocab;
  // model.merges in rank order (the first merges first).
  std::vector<std::pair<std::string, std::string>> merges;
  bool ignore_merges = false;
  std::vector<AddedTokenSpec> added_tokens;
  // The BOS token content from a TemplateProcessing post-processor ("$A" preceded by one special
  // token); when set, Hugging Face adds it on encode with add_special_tokens.
  std::optional<std::string> template_bos;
};

// Parses tokenizer.json. `source` names the input in error messages.
absl::StatusOr<TokenizerSpec> ParseTokenizerJson(absl::string_view json, absl::string_view source);

struct TokenizerConfigSpec {
  std::optional<std::string> bos_token;  // content of bos_token (a string or {"content": ...})
  std::optional<bool> add_bos_token;
};

// Parses tokenizer_config.json; only bos_token and add_bos_token are read.
absl::StatusOr<TokenizerConfigSpec> ParseTokenizerConfigJson(absl::string_view json,
                                                             absl::string_view source);

}  // namespace bitserve
