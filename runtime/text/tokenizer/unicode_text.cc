#include "runtime/text/tokenizer/unicode_text.h"

#include <array>
#include <memory>

#include "utf8proc.h"

namespace bitserve {
namespace {

uint8_t ClassifyWithUtf8proc(char32_t cp) {
  // Of the White_Space code points (PropList.txt), all but six are the separators Zs, Zl and Zp;
  // the six are controls (Cc) that the general category cannot tell from the other controls.
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) {
    return kWhiteSpace | (cp == '\r' || cp == '\n' ? kLineBreak : 0);
  }
  switch (utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->category) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return kLetter;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return kNumber;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return kWhiteSpace;
    default:
      return 0;
  }
}

// The classes of the Basic Multilingual Plane, computed once from utf8proc: almost all text
// stays in it, and a 64 KiB byte table is cheaper than a property lookup per character.
const std::array<uint8_t, 0x10000>& BmpClasses() {
  static const auto* table = [] {
    auto* t = new std::array<uint8_t, 0x10000>;
    for (char32_t cp = 0; cp < 0x10000; ++cp) (*t)[cp] = ClassifyWithUtf8proc(cp);
    return t;
  }();
  return *table;
}

}  // namespace

uint8_t ClassifyCodepoint(char32_t cp) {
  static const std::array<uint8_t, 0x10000>& bmp = BmpClasses();
  return cp < 0x10000 ? bmp[cp] : ClassifyWithUtf8proc(cp);
}

char FoldToAsciiLetter(char32_t cp) {
  if (cp < 0x80) {
    if (cp >= 'A' && cp <= 'Z') return static_cast<char>(cp - 'A' + 'a');
    if (cp >= 'a' && cp <= 'z') return static_cast<char>(cp);
    return 0;
  }
  utf8proc_int32_t folded[4];
  int last_boundclass = 0;
  utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), folded, 4,
                                               UTF8PROC_CASEFOLD, &last_boundclass);
  // Only one-code-point foldings count: the regex engines compare single characters.
  if (n == 1 && folded[0] >= 'a' && folded[0] <= 'z') return static_cast<char>(folded[0]);
  return 0;
}

namespace {

// Length of the well-formed sequence at s[i] (1..4), or 0 with `*bad` set to the length of its
// maximal subpart (the bytes one U+FFFD replaces). Table 3-7 of the Unicode standard.
size_t WellFormedLength(const unsigned char* s, size_t i, size_t n, size_t* bad) {
  const unsigned char b = s[i];
  if (b < 0x80) return 1;
  size_t need;
  unsigned char lower = 0x80, upper = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lower = 0xA0;
    if (b == 0xED) upper = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lower = 0x90;
    if (b == 0xF4) upper = 0x8F;  // nothing past U+10FFFF
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= n || s[i + k] < lower || s[i + k] > upper) {
      *bad = k;
      return 0;
    }
    lower = 0x80;
    upper = 0xBF;
  }
  return need + 1;
}

}  // namespace

bool IsValidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Runs of ASCII are the common case: check eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      __builtin_memcpy(&word, s + i, 8);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t bad = 0;
    size_t length = WellFormedLength(s, i, n, &bad);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string ReplaceInvalidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  std::string out;
  out.reserve(n + 8);
  size_t i = 0;
  while (i < n) {
    size_t bad = 0;
    size_t length = WellFormedLength(s, i, n, &bad);
    if (length > 0) {
      out.append(text.data() + i, length);
      i += length;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

}  // namespace bitserve
