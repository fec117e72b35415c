// Unicode facts the tokenizer needs, taken from utf8proc (no hand-made tables): the character
// classes of the LLaMA-3 pre-tokenizer regex, case folding for its contractions, and UTF-8
// decoding with the replacement rule that JS TextDecoder and Rust's from_utf8_lossy share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace bitserve {

// Bit flags of one code point, as the regex classes see it.
enum CodepointClass : uint8_t {
  kLetter = 1,      // \p{L}: general category Lu, Ll, Lt, Lm, Lo
  kNumber = 2,      // \p{N}: Nd, Nl, No
  kWhiteSpace = 4,  // \s: the Unicode White_Space property (what Rust regex and Oniguruma use)
  kLineBreak = 8,   // \r or \n (also kWhiteSpace)
};

uint8_t ClassifyCodepoint(char32_t cp);

// One decoded character of well-formed UTF-8.
struct Utf8Char {
  char32_t cp;
  uint8_t length;  // bytes
  uint8_t cls;     // CodepointClass flags
};

// Decodes the character at `s[pos]`; `s` must be well-formed UTF-8 and pos < its size.
inline Utf8Char DecodeUtf8At(const unsigned char* s, size_t pos) {
  const unsigned char b = s[pos];
  if (b < 0x80) return {b, 1, ClassifyCodepoint(b)};
  char32_t cp;
  uint8_t length;
  if (b < 0xE0) {
    cp = ((b & 0x1F) << 6) | (s[pos + 1] & 0x3F);
    length = 2;
  } else if (b < 0xF0) {
    cp = ((b & 0x0F) << 12) | ((s[pos + 1] & 0x3F) << 6) | (s[pos + 2] & 0x3F);
    length = 3;
  } else {
    cp = ((b & 0x07) << 18) | ((s[pos + 1] & 0x3F) << 12) | ((s[pos + 2] & 0x3F) << 6) |
         (s[pos + 3] & 0x3F);
    length = 4;
  }
  return {cp, length, ClassifyCodepoint(cp)};
}

// The ASCII letter that `cp` case-folds to by simple (one code point) Unicode case folding, as
// the regex `(?i:...)` compares characters: 'S' -> 's', U+017F LATIN SMALL LETTER LONG S -> 's'.
// 0 when it folds to no ASCII letter.
char FoldToAsciiLetter(char32_t cp);

bool IsValidUtf8(absl::string_view text);

// Replaces every ill-formed sequence with U+FFFD, one per maximal subpart (Unicode 15 §3.9,
// "U+FFFD Substitution of Maximal Subparts"): the rule of the WHATWG TextDecoder that the JS
// reference uses and of Rust's String::from_utf8_lossy.
std::string ReplaceInvalidUtf8(absl::string_view text);

}  // namespace bitserve
