// The packed ternary format of Hugging Face BitNet checkpoints (transformers' pack_weights):
//
//   logical T: [out, in], values in {-1, 0, +1}         packed P: [out/4, in], dtype U8
//   rows4 = out / 4
//   P[r][i] bits 2k..2k+1 = T[k * rows4 + r][i] + 1     (k = 0..3; code 3 is invalid)
//
// i.e. the four quarters of the output dimension share each byte, quarter k in bits 2k.
// This layout never reaches a kernel: engines repack at load into their own layouts.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace bitserve {

// Decodes P ([out/4, in]) into T ([out, in], row-major int8). A code of 3 is a DataLoss error
// that starts with `tensor_name` (the file and tensor) and names the byte's position.
absl::Status UnpackTernary(std::span<const uint8_t> packed, int64_t out, int64_t in,
                           std::span<int8_t> values, absl::string_view tensor_name);

// Encodes T ([out, in], values in {-1, 0, +1}, out % 4 == 0) into P.
std::vector<uint8_t> PackTernary(std::span<const int8_t> values, int64_t out, int64_t in);

}  // namespace bitserve
