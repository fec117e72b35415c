// Hugging Face `tokenizer.json` byte-level BPE (the LLaMA-3 family): the Split pre-tokenizer with
// LLaMA-3's regex, byte-level mapping, merges by rank with ignore_merges, added/special tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitserve {

struct EncodeOptions {
  // Whether special-token text inside the input ("<|eot_id|>") becomes the special token. Off by
  // default: user content must not be able to inject control tokens.
  bool parse_special = false;
  bool add_bos = false;  // prepend the BOS token (tokenizer_config.json / post-processor)
  // > 0: stop encoding once more than this many ids were made. The result is then a prefix of
  // more than max_tokens ids (not necessarily the exact prefix of the full encoding, nor all of
  // it): enough to tell that the text is too long, at a cost bounded by the limit.
  size_t max_tokens = 0;
};

class Tokenizer {
 public:
  // `path` is tokenizer.json or a directory holding it (and optionally tokenizer_config.json).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& path);
  // `source` names the input in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json,
                                                             absl::string_view source);
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> Encode(absl::string_view text,
                                      const EncodeOptions& options = {}) const = 0;

  // The bytes a token stands for: byte-level decoded for BPE tokens (possibly a partial UTF-8
  // character), the literal text for added/special tokens; empty for an unknown id.
  virtual const std::string& TokenBytes(int32_t id) const = 0;
  // Concatenated TokenBytes (invalid UTF-8 is replaced with U+FFFD); skip_special drops special
  // tokens.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;

  // Exact lookup of a vocabulary or added token's string form (e.g. "<|eot_id|>").
  virtual std::optional<int32_t> TokenId(absl::string_view token) const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;  // largest id + 1
  virtual std::optional<int32_t> bos_id() const = 0;
  // Whether the tokenizer's own files ask for BOS on encode: tokenizer_config.json's
  // add_bos_token, else a post-processor template that starts with BOS (as LLaMA-3's does).
  // A hint for callers that build EncodeOptions; Encode itself adds BOS only when asked.
  virtual bool add_bos_default() const { return false; }
  // The most input bytes one token can stand for (the longest token), so that a text of more
  // than max_tokens * max_token_bytes() bytes is known to need more than max_tokens tokens
  // without encoding it (TextExceedsTokens). 0: no such bound (added tokens that strip
  // whitespace stand for any number of bytes).
  virtual size_t max_token_bytes() const { return 0; }
};

// Whether `text_bytes` bytes certainly encode to more than `max_tokens` tokens.
inline bool TextExceedsTokens(const Tokenizer& tokenizer, size_t text_bytes, size_t max_tokens) {
  const size_t per_token = tokenizer.max_token_bytes();
  return per_token > 0 && text_bytes / per_token > max_tokens;
}

}  // namespace bitserve
