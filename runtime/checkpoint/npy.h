// NumPy .npy files (format 1.0) of little-endian float32 arrays: `bitserve logits` writes them and
// the golden tests read the reference logits made by transformers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"

namespace bitserve {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

absl::Status WriteNpyFloat32(const std::filesystem::path& path, const std::vector<int64_t>& shape,
                             const float* data);

// Reads a C-order '<f4' array; anything else is an error naming the file.
absl::StatusOr<NpyArray> ReadNpyFloat32(const std::filesystem::path& path);

}  // namespace bitserve
