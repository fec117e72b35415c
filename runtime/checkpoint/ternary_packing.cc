#include "runtime/checkpoint/ternary_packing.h"

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace bitserve {

absl::Status UnpackTernary(std::span<const uint8_t> packed, int64_t out, int64_t in,
                           std::span<int8_t> values, absl::string_view tensor_name) {
  BITSERVE_CHECK(out % 4 == 0 && packed.size() == static_cast<size_t>(out / 4 * in) &&
                 values.size() == static_cast<size_t>(out * in))
      << tensor_name << " out=" << out << " in=" << in;
  const int64_t rows4 = out / 4;
  for (int64_t r = 0; r < rows4; ++r) {
    const uint8_t* src = packed.data() + r * in;
    for (int64_t i = 0; i < in; ++i) {
      const uint8_t byte = src[i];
      // A byte holds a code of 3 iff some 2-bit field is 0b11.
      if ((byte & (byte >> 1) & 0x55) != 0) {
        return absl::DataLossError(
            absl::StrCat(tensor_name, ": invalid ternary code 3 in packed byte [", r, ", ", i,
                         "] = 0x", absl::Hex(byte), " (codes must be 0, 1, 2 for -1, 0, +1)"));
      }
      for (int k = 0; k < 4; ++k) {
        values[(k * rows4 + r) * in + i] = static_cast<int8_t>(((byte >> (2 * k)) & 3) - 1);
      }
    }
  }
  return absl::OkStatus();
}

std::vector<uint8_t> PackTernary(std::span<const int8_t> values, int64_t out, int64_t in) {
  BITSERVE_CHECK(out % 4 == 0 && values.size() == static_cast<size_t>(out * in));
  const int64_t rows4 = out / 4;
  std::vector<uint8_t> packed(rows4 * in, 0);
  for (int64_t o = 0; o < out; ++o) {
    const int64_t k = o / rows4, r = o % rows4;
    for (int64_t i = 0; i < in; ++i) {
      const int8_t v = values[o * in + i];
      BITSERVE_CHECK(v >= -1 && v <= 1) << "value " << int{v} << " at [" << o << ", " << i << "]";
      packed[r * in + i] |= static_cast<uint8_t>((v + 1) << (2 * k));
    }
  }
  return packed;
}

}  // namespace bitserve
