#include "runtime/text/tokenizer/added_tokens.h"

#include <algorithm>

#include "runtime/text/tokenizer/unicode_text.h"

namespace bitserve {
namespace {

bool IsWhiteSpace(const unsigned char* s, size_t pos) {
  return DecodeUtf8At(s, pos).cls & kWhiteSpace;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<Token> tokens) : tokens_(std::move(tokens)) {
  terminal_.push_back(kNoToken);
  for (size_t t = 0; t < tokens_.size(); ++t) {
    int32_t node = 0;
    for (unsigned char b : tokens_[t].content) {
      auto [it, inserted] = edges_.try_emplace((static_cast<uint64_t>(node) << 8) | b,
                                               static_cast<int32_t>(terminal_.size()));
      if (inserted) terminal_.push_back(kNoToken);
      node = it->second;
    }
    // Two added tokens with one content cannot happen (contents are checked unique at load).
    terminal_[node] = static_cast<int32_t>(t);
    starts_[static_cast<unsigned char>(tokens_[t].content[0])] = true;
  }
}

int32_t AddedTokenMatcher::LongestAt(absl::string_view text, size_t pos, size_t* end) const {
  int32_t node = 0, found = kNoToken;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] != kNoToken) {
      found = terminal_[node];
      *end = i + 1;
    }
  }
  return found;
}

void AddedTokenMatcher::Split(absl::string_view text, bool match_special,
                              absl::FunctionRef<void(absl::string_view)> on_text,
                              absl::FunctionRef<void(int32_t)> on_token) const {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t emitted = 0;  // text before this is already passed on
  size_t pos = 0;
  while (pos < n) {
    if (!starts_[s[pos]]) {
      ++pos;
      continue;
    }
    size_t end = 0;
    const int32_t t = LongestAt(text, pos, &end);
    if (t == kNoToken) {
      ++pos;
      continue;
    }
    const Token& token = tokens_[t];
    if (token.special && !match_special) {
      // As in Hugging Face, the skipped match still hides the text it covers from other tokens.
      pos = end;
      continue;
    }
    size_t start = pos, stop = end;
    if (token.lstrip) {
      // Whitespace back to the previous match, which may have taken some already.
      while (start > emitted) {
        size_t prev = start - 1;
        while (prev > emitted && (s[prev] & 0xC0) == 0x80) --prev;
        if (!IsWhiteSpace(s, prev)) break;
        start = prev;
      }
    }
    if (token.rstrip) {
      while (stop < n && IsWhiteSpace(s, stop)) stop += DecodeUtf8At(s, stop).length;
    }
    if (start > emitted) on_text(text.substr(emitted, start - emitted));
    on_token(token.id);
    // Matching goes on after the stripped whitespace; Hugging Face goes on after the token
    // itself, which differs only for a token that starts with whitespace.
    emitted = pos = stop;
  }
  if (emitted < n) on_text(text.substr(emitted));
}

}  // namespace bitserve
