#include "runtime/text/detokenizer.h"

namespace bitserve {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed sequence a lead byte starts (0: never a lead byte), and the range its
// second byte must fall in; later bytes are always 80..BF (Unicode Table 3-7).
struct LeadByte {
  int length;
  unsigned char second_lo, second_hi;
};

LeadByte Classify(unsigned char b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};  // continuation byte, or C0/C1 (overlong)
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};  // no overlong 3-byte forms
  if (b == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};  // no overlong 4-byte forms
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // nothing above U+10FFFF
  return {0, 0, 0};
}

}  // namespace

size_t AppendFinalUtf8(absl::string_view bytes, bool at_end, std::string& out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    const LeadByte info = Classify(lead);
    if (info.length == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    // Count how many bytes after the lead continue the sequence validly.
    int valid = 1;
    while (valid < info.length && i + valid < bytes.size()) {
      const auto b = static_cast<unsigned char>(bytes[i + valid]);
      const bool ok =
          valid == 1 ? b >= info.second_lo && b <= info.second_hi : b >= 0x80 && b <= 0xBF;
      if (!ok) break;
      ++valid;
    }
    if (valid == info.length) {
      out.append(bytes.data() + i, valid);
    } else if (i + valid == bytes.size() && !at_end) {
      break;  // a valid start of a character whose remaining bytes have not arrived yet
    } else {
      out += kReplacement;  // the maximal subpart: the lead and the bytes that fit it
    }
    i += valid;
  }
  return i;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::Push(int32_t token) {
  // A skipped special token leaves pending bytes pending: Decode(skip_special) joins its
  // neighbours.
  if (skip_special_tokens_ && tokenizer_.IsSpecial(token)) return {};
  pending_ += tokenizer_.TokenBytes(token);
  std::string out;
  pending_.erase(0, AppendFinalUtf8(pending_, /*at_end=*/false, out));
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  AppendFinalUtf8(pending_, /*at_end=*/true, out);
  pending_.clear();
  return out;
}

}  // namespace bitserve
