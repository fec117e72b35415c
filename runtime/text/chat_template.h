// The chat template of BitNet b1.58 2B4T, applied directly to token ids:
//   <|begin_of_text|> then per message  "Role: " content<|eot_id|>  then "Assistant: "
// where Role is the capitalized role and content is trimmed of leading/trailing whitespace (the
// Jinja template's `capitalize` and `trim`). Each piece is encoded on its own, as the reference
// tokenization of the template does: "User: " and "hello" never merge into " hello". Special-token
// text inside content stays plain text (EncodeOptions default), so users cannot inject control
// tokens.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// InvalidArgument for no messages or an unknown role (naming it and the message index);
// NotFound when the tokenizer lacks <|begin_of_text|> or <|eot_id|>. max_tokens > 0 stops the
// work once more than that many ids were made (EncodeOptions::max_tokens): a result longer than
// max_tokens then only says "too long".
absl::StatusOr<std::vector<int32_t>> ApplyChatTemplate(const Tokenizer& tokenizer,
                                                       std::span<const ChatMessage> messages,
                                                       bool add_generation_prompt = true,
                                                       size_t max_tokens = 0);

}  // namespace bitserve
