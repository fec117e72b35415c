// Whole-file reads for the small text and array files the runtime loads (configs, .npy).
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace bitserve {

// NotFound naming the path when it cannot be opened; DataLoss when reading fails midway.
absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path);

}  // namespace bitserve
