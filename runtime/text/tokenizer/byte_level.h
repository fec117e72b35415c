// GPT-2's byte-level alphabet (bytes_to_unicode): every byte is shown as one printable code
// point, so that BPE vocabularies are strings. Printable Latin-1 bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') stand for themselves; the other 68 bytes map, in byte order, to U+0100, U+0101, ...
// (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace bitserve {

// The UTF-8 of the code point that stands for `byte`.
absl::string_view ByteLevelChar(unsigned char byte);

// The code point that stands for `byte`.
char32_t ByteLevelCodepoint(unsigned char byte);

// Raw bytes -> byte-level string.
std::string ByteLevelEncode(absl::string_view bytes);

// Byte-level string -> raw bytes; nullopt when `text` holds a character outside the alphabet
// (or is not well-formed UTF-8).
std::optional<std::string> ByteLevelDecode(absl::string_view text);

}  // namespace bitserve
