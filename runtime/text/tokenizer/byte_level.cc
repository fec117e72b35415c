#include "runtime/text/tokenizer/byte_level.h"

#include <array>

namespace bitserve {
namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> codepoint;
  std::array<std::string, 256> utf8;
  std::array<int16_t, 0x144> byte_of;  // code point -> byte, -1 if not in the alphabet
};

std::string EncodeUtf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {  // the alphabet stays below U+0800
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

const ByteLevelTables& Tables() {
  static const ByteLevelTables* tables = [] {
    auto* t = new ByteLevelTables;
    t->byte_of.fill(-1);
    int next_unprintable = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? b : 0x100 + next_unprintable++;
      t->codepoint[b] = cp;
      t->utf8[b] = EncodeUtf8(cp);
      t->byte_of[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return *tables;
}

}  // namespace

absl::string_view ByteLevelChar(unsigned char byte) { return Tables().utf8[byte]; }

char32_t ByteLevelCodepoint(unsigned char byte) { return Tables().codepoint[byte]; }

std::string ByteLevelEncode(absl::string_view bytes) {
  const ByteLevelTables& t = Tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += t.utf8[b];
  return out;
}

std::optional<std::string> ByteLevelDecode(absl::string_view text) {
  const ByteLevelTables& t = Tables();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    char32_t cp;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      cp = ((b0 & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;  // three- and four-byte characters are all outside the alphabet
    }
    if (cp >= t.byte_of.size() || t.byte_of[cp] < 0) return std::nullopt;
    out += static_cast<char>(t.byte_of[cp]);
  }
  return out;
}

}  // namespace bitserve
