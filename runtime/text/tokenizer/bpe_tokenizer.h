// The byte-level BPE Tokenizer of tokenizer.json (LLaMA-3 family). Encoding a text:
//   1. ill-formed UTF-8 is replaced with U+FFFD (as the JS reference's TextDecoder would);
//   2. added tokens are cut out (AddedTokenMatcher): non-special ones always, special ones only
//      with EncodeOptions.parse_special — Hugging Face's encode_special_tokens semantics;
//   3. the rest is split by the LLaMA-3 regex (pretokenizer.h);
//   4. each pre-token's bytes become ids: the whole pre-token when it is in the vocabulary and
//      the model has ignore_merges, else byte-pair merges (BpeModel, memoized by PreTokenCache).
// Encode is const and safe to call from several threads at once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/text/tokenizer/added_tokens.h"
#include "runtime/text/tokenizer/bpe_model.h"
#include "runtime/text/tokenizer/pretoken_cache.h"
#include "runtime/text/tokenizer/tokenizer.h"
#include "runtime/text/tokenizer/tokenizer_json.h"

namespace bitserve {

class BpeTokenizer final : public Tokenizer {
 public:
  // Checks the parsed files for consistency (unique ids and contents, merges of known tokens,
  // a complete byte alphabet, a known BOS) and builds the lookup tables. Errors name `source`
  // (or `config_source` for tokenizer_config.json) and the field.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(
      TokenizerSpec spec, absl::string_view source,
      const std::optional<TokenizerConfigSpec>& config = std::nullopt,
      absl::string_view config_source = "tokenizer_config.json");

  std::vector<int32_t> Encode(absl::string_view text,
                              const EncodeOptions& options = {}) const override;
  const std::string& TokenBytes(int32_t id) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const override;
  std::optional<int32_t> TokenId(absl::string_view token) const override;
  bool IsSpecial(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  bool add_bos_default() const override { return add_bos_default_; }
  size_t max_token_bytes() const override { return max_token_bytes_; }

 private:
  BpeTokenizer(std::array<int32_t, 256> byte_tokens, std::vector<AddedTokenMatcher::Token> raw,
               std::vector<AddedTokenMatcher::Token> normalized)
      : bpe_(byte_tokens), raw_added_(std::move(raw)), normalized_added_(std::move(normalized)) {}

  // Text with no added tokens in it; stops once `out` holds more than `limit` ids.
  void EncodeOrdinary(absl::string_view text, size_t limit, std::vector<int32_t>* out) const;
  void EncodePreToken(absl::string_view piece, std::vector<int32_t>* out) const;

  std::vector<std::string> token_bytes_;  // by id; empty where no token has the id
  std::vector<bool> is_special_;          // by id
  // String form -> id: byte-level strings of the vocabulary, contents of added tokens.
  absl::flat_hash_map<std::string, int32_t> token_ids_;
  // Raw bytes -> id for vocabulary tokens (views into token_bytes_), for ignore_merges.
  absl::flat_hash_map<absl::string_view, int32_t> vocab_by_bytes_;
  bool ignore_merges_ = false;
  BpeModel bpe_;
  // Hugging Face matches added tokens in two passes: those with normalized=false on the raw
  // text, then those with normalized=true on what is left (after normalization, of which these
  // tokenizers have none).
  AddedTokenMatcher raw_added_;
  AddedTokenMatcher normalized_added_;
  std::optional<int32_t> bos_id_;
  bool add_bos_default_ = false;
  size_t max_token_bytes_ = 0;
  PreTokenCache cache_;
};

}  // namespace bitserve
