// The LLaMA-3 pre-tokenizer: tokenizer.json's Split with the regex below and behavior "Isolated",
// implemented as a hand-written matcher with the regex's exact leftmost-first semantics.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/strings/string_view.h"

namespace bitserve {

// The only Split pattern bitserve implements. Alternatives, in the order the regex tries them:
//   1 (?i:'s|'t|'re|'ve|'m|'ll|'d)   contractions, any case (Unicode simple case folding)
//   2 [^\r\n\p{L}\p{N}]?\p{L}+       a word with at most one leading non-letter (often a space)
//   3 \p{N}{1,3}                      digits in groups of at most three
//   4  ?[^\s\p{L}\p{N}]+[\r\n]*       punctuation/symbols, an optional leading space, newlines
//   5 \s*[\r\n]+                      whitespace ending in line breaks
//   6 \s+(?!\S)                       whitespace, leaving its last char to the next word
//   7 \s+                             any other whitespace
inline constexpr absl::string_view kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Byte length of the pre-token that starts at `text[pos]` (pos < text.size(); text is
// well-formed UTF-8). The regex matches every character, so pre-tokens tile the text.
size_t Llama3PreTokenLength(absl::string_view text, size_t pos);

// All pre-tokens of `text` (well-formed UTF-8), in order.
std::vector<absl::string_view> SplitLlama3(absl::string_view text);

}  // namespace bitserve
