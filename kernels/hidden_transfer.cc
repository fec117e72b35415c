#include "kernels/hidden_transfer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/bf16.h"

namespace bitserve {

absl::StatusOr<TransferDtype> ParseTransferDtype(absl::string_view name) {
  if (name == "int8") return TransferDtype::kInt8;
  if (name == "bf16") return TransferDtype::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("pipeline transfer dtype must be int8 or bf16, got \"", name, "\""));
}

std::string TransferDtypeName(TransferDtype dtype) {
  return dtype == TransferDtype::kInt8 ? "int8" : "bf16";
}

void EncodeHidden(TransferDtype dtype, const float* x, int64_t tokens, int64_t hidden,
                  uint8_t* out) {
  if (dtype == TransferDtype::kBf16) {
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      const uint16_t b = FloatToBf16(x[i]);
      std::memcpy(out + 2 * i, &b, 2);
    }
    return;
  }
  int8_t* q = reinterpret_cast<int8_t*>(out + 4 * tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * hidden;
    float amax = 0;
    for (int64_t i = 0; i < hidden; ++i) amax = std::max(amax, std::abs(row[i]));
    const float scale = amax / 127.0f;
    std::memcpy(out + 4 * t, &scale, 4);
    const float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < hidden; ++i) {
      q[t * hidden + i] =
          static_cast<int8_t>(std::clamp(std::nearbyint(row[i] * inv), -127.0f, 127.0f));
    }
  }
}

void DecodeHidden(TransferDtype dtype, const uint8_t* in, int64_t tokens, int64_t hidden,
                  float* x) {
  if (dtype == TransferDtype::kBf16) {
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      uint16_t b;
      std::memcpy(&b, in + 2 * i, 2);
      x[i] = Bf16ToFloat(b);
    }
    return;
  }
  const int8_t* q = reinterpret_cast<const int8_t*>(in + 4 * tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    float scale;
    std::memcpy(&scale, in + 4 * t, 4);
    for (int64_t i = 0; i < hidden; ++i) x[t * hidden + i] = q[t * hidden + i] * scale;
  }
}

}  // namespace bitserve
