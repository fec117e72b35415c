#include "runtime/text/tokenizer/pretokenizer.h"

#include "runtime/text/tokenizer/unicode_text.h"

namespace bitserve {
namespace {

// Neither \s, \p{L} nor \p{N}: the class of alternative 4 (punctuation, symbols, marks, emoji,
// format characters, unassigned code points...).
bool IsOther(uint8_t cls) { return (cls & (kLetter | kNumber | kWhiteSpace)) == 0; }

}  // namespace

size_t Llama3PreTokenLength(absl::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const Utf8Char c = DecodeUtf8At(s, pos);
  const size_t next = pos + c.length;
  auto letters_end = [&](size_t j) {
    while (j < n) {
      Utf8Char d = DecodeUtf8At(s, j);
      if (!(d.cls & kLetter)) break;
      j += d.length;
    }
    return j;
  };

  // 1: contractions. The alternatives start with different letters, so leftmost-first order
  // between them never matters.
  if (c.cp == '\'' && next < n) {
    const Utf8Char c2 = DecodeUtf8At(s, next);
    const char f = FoldToAsciiLetter(c2.cp);
    const size_t after2 = next + c2.length;
    if (f == 's' || f == 't' || f == 'm' || f == 'd') return after2 - pos;
    if ((f == 'r' || f == 'v' || f == 'l') && after2 < n) {
      const Utf8Char c3 = DecodeUtf8At(s, after2);
      if (FoldToAsciiLetter(c3.cp) == (f == 'l' ? 'l' : 'e')) return after2 + c3.length - pos;
    }
  }

  // 2: a letter run, or one character outside [\r\n\p{L}\p{N}] followed by a letter run. A
  // leading letter cannot be the optional prefix (the class excludes \p{L}), so the run starts
  // at `pos` then.
  if (c.cls & kLetter) return letters_end(next) - pos;
  if (!(c.cls & (kLineBreak | kNumber)) && next < n) {
    const Utf8Char c2 = DecodeUtf8At(s, next);
    if (c2.cls & kLetter) return letters_end(next + c2.length) - pos;
  }

  // 3: one to three numbers.
  if (c.cls & kNumber) {
    size_t j = next;
    for (int k = 1; k < 3 && j < n; ++k) {
      const Utf8Char d = DecodeUtf8At(s, j);
      if (!(d.cls & kNumber)) break;
      j += d.length;
    }
    return j - pos;
  }

  // 4: an optional space (greedy, so taken when a class character follows it), a run of the
  // class, then any \r and \n.
  size_t run = n;  // start of the class run; n when alternative 4 does not match
  if (IsOther(c.cls)) {
    run = pos;
  } else if (c.cp == ' ' && next < n && IsOther(DecodeUtf8At(s, next).cls)) {
    run = next;
  }
  if (run < n) {
    size_t j = run;
    while (j < n) {
      const Utf8Char d = DecodeUtf8At(s, j);
      if (!IsOther(d.cls)) break;
      j += d.length;
    }
    while (j < n && (s[j] == '\r' || s[j] == '\n')) ++j;
    return j - pos;
  }

  // Only whitespace is left (every other class matched above). Scan its run once, noting where
  // its last line break ends and where its last character starts.
  size_t j = pos, last_break_end = 0, last_start = pos;
  while (j < n) {
    const Utf8Char d = DecodeUtf8At(s, j);
    if (!(d.cls & kWhiteSpace)) break;
    if (d.cls & kLineBreak) last_break_end = j + d.length;
    last_start = j;
    j += d.length;
  }
  // 5: \s* backtracks from the end of the run to the last line break; [\r\n]+ takes it (and no
  // more, being the last).
  if (last_break_end > 0) return last_break_end - pos;
  // 6: at the end of the text the lookahead holds for the whole run; before a non-space it holds
  // once the run gives back its last character, if the run keeps at least one.
  if (j == n) return n - pos;
  if (last_start > pos) return last_start - pos;
  // 7: a single whitespace character before a non-space.
  return j - pos;
}

std::vector<absl::string_view> SplitLlama3(absl::string_view text) {
  std::vector<absl::string_view> pieces;
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = Llama3PreTokenLength(text, pos);
    pieces.push_back(text.substr(pos, length));
    pos += length;
  }
  return pieces;
}

}  // namespace bitserve
