#include "runtime/text/chat_template.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace bitserve {
namespace {

// The code points Python's str.strip() removes (Jinja's `trim` calls it), in UTF-8; ASCII first,
// the common case. Byte-level BPE would otherwise turn a stray U+00A0 into extra tokens.
constexpr absl::string_view kSpaces[] = {
    " ",
    "\t",
    "\n",
    "\v",
    "\f",
    "\r",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x1f",
    "\xC2\x85",
    "\xC2\xA0",
    "\xE1\x9A\x80",
    "\xE2\x80\x80",
    "\xE2\x80\x81",
    "\xE2\x80\x82",
    "\xE2\x80\x83",
    "\xE2\x80\x84",
    "\xE2\x80\x85",
    "\xE2\x80\x86",
    "\xE2\x80\x87",
    "\xE2\x80\x88",
    "\xE2\x80\x89",
    "\xE2\x80\x8A",
    "\xE2\x80\xA8",
    "\xE2\x80\xA9",
    "\xE2\x80\xAF",
    "\xE2\x81\x9F",
    "\xE3\x80\x80",
};

size_t LeadingSpaceLength(absl::string_view s) {
  for (absl::string_view space : kSpaces) {
    if (absl::StartsWith(s, space)) return space.size();
  }
  return 0;
}

size_t TrailingSpaceLength(absl::string_view s) {
  for (absl::string_view space : kSpaces) {
    if (absl::EndsWith(s, space)) return space.size();
  }
  return 0;
}

absl::string_view Trim(absl::string_view s) {
  while (size_t n = LeadingSpaceLength(s)) s.remove_prefix(n);
  while (size_t n = TrailingSpaceLength(s)) s.remove_suffix(n);
  return s;
}

std::optional<absl::string_view> RolePrefix(absl::string_view role) {
  if (role == "system") return "System: ";
  if (role == "user") return "User: ";
  if (role == "assistant") return "Assistant: ";
  return std::nullopt;
}

absl::StatusOr<int32_t> SpecialId(const Tokenizer& tokenizer, absl::string_view token) {
  std::optional<int32_t> id = tokenizer.TokenId(token);
  if (!id) {
    return absl::NotFoundError(
        absl::StrCat("chat template needs token ", token, ", which the tokenizer does not have"));
  }
  return *id;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ApplyChatTemplate(const Tokenizer& tokenizer,
                                                       std::span<const ChatMessage> messages,
                                                       bool add_generation_prompt,
                                                       size_t max_tokens) {
  if (messages.empty()) return absl::InvalidArgumentError("chat has no messages");
  ASSIGN_OR_RETURN(const int32_t bos, SpecialId(tokenizer, "<|begin_of_text|>"));
  ASSIGN_OR_RETURN(const int32_t eot, SpecialId(tokenizer, "<|eot_id|>"));

  const size_t limit = max_tokens > 0 ? max_tokens : SIZE_MAX;
  std::vector<int32_t> ids = {bos};
  // Each piece is encoded with what is left of the limit; past it, the rest is skipped.
  auto append = [&](absl::string_view text) {
    if (ids.size() > limit) return;
    EncodeOptions options;
    options.max_tokens = max_tokens > 0 ? limit - ids.size() : 0;
    if (max_tokens > 0 && options.max_tokens == 0) {
      options.max_tokens = 1;  // 0 would mean no limit; one more id passes it as well
    }
    const std::vector<int32_t> more = tokenizer.Encode(text, options);
    ids.insert(ids.end(), more.begin(), more.end());
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::optional<absl::string_view> prefix = RolePrefix(messages[i].role);
    if (!prefix) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].role is \"", messages[i].role,
                       "\"; expected \"system\", \"user\" or \"assistant\""));
    }
    append(*prefix);
    append(Trim(messages[i].content));
    if (ids.size() <= limit) ids.push_back(eot);
  }
  if (add_generation_prompt) append("Assistant: ");
  return ids;
}

}  // namespace bitserve
