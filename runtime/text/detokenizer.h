// Streaming detokenization: turns generated token ids into text as soon as the text is final.
//
// Byte-level BPE tokens are byte strings that may end in the middle of a UTF-8 character (an emoji
// can take four tokens). Bytes are held until they form complete, well-formed characters; a
// sequence that can never become well-formed is released as U+FFFD, one per maximal ill-formed
// subpart (Unicode ch. 3, "U+FFFD Substitution of Maximal Subparts", as WHATWG and Python do).
// The concatenation of all Push results and Flush equals Tokenizer::Decode of all ids with the same
// skip_special. No clean_up_tokenization_spaces pass (vLLM does none either): output is exactly the
// tokens' bytes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = true);

  // Appends one token; returns the text that became final (possibly empty).
  std::string Push(int32_t token);
  // At the end of the sequence: releases pending bytes, an incomplete character as U+FFFD.
  std::string Flush();

  // Bytes of an incomplete character waiting for the next token (at most 3).
  absl::string_view pending() const { return pending_; }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

// Appends to `out` the longest prefix of `bytes` that is final: well-formed characters, and U+FFFD
// for each maximal ill-formed subpart. An incomplete but so-far valid character at the end is
// left unconsumed unless `at_end`, when it too becomes U+FFFD. Returns the bytes consumed.
size_t AppendFinalUtf8(absl::string_view bytes, bool at_end, std::string& out);

}  // namespace bitserve
