// Finding added tokens ("<|eot_id|>", user-added words) in text before pre-tokenization, with
// Hugging Face's AddedVocabulary semantics: leftmost-longest matches, special tokens skipped when
// they are not to be parsed (their text then stays ordinary text), lstrip/rstrip taking adjacent
// whitespace into the match.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"

namespace bitserve {

class AddedTokenMatcher {
 public:
  struct Token {
    std::string content;  // non-empty
    int32_t id;
    bool special;
    bool lstrip;
    bool rstrip;
  };

  explicit AddedTokenMatcher(std::vector<Token> tokens);

  bool empty() const { return tokens_.empty(); }

  // Cuts `text` at the added tokens found in it: `on_text` receives each non-empty stretch of
  // ordinary text and `on_token` each matched token id, in text order. Special tokens match only
  // when `match_special`.
  void Split(absl::string_view text, bool match_special,
             absl::FunctionRef<void(absl::string_view)> on_text,
             absl::FunctionRef<void(int32_t)> on_token) const;

 private:
  static constexpr int32_t kNoToken = -1;
  // Index into tokens_ of the longest token starting at text[pos], or kNoToken.
  int32_t LongestAt(absl::string_view text, size_t pos, size_t* end) const;

  std::vector<Token> tokens_;
  // Byte trie: edges keyed by (node << 8 | byte); node 0 is the root.
  absl::flat_hash_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> terminal_;   // per node: index into tokens_, or kNoToken
  std::array<bool, 256> starts_{};  // whether some token starts with this byte
};

}  // namespace bitserve
