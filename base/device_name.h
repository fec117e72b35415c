// The --device names every command takes: "cpu", "cuda" (GPU 0) and "cuda:N".
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace bitserve {

inline bool IsCudaDevice(const std::string& device) {
  return device == "cuda" || device.rfind("cuda:", 0) == 0;
}

// The CUDA ordinal of "cuda" (0) or "cuda:N"; InvalidArgument naming the device otherwise.
inline absl::StatusOr<int> CudaDeviceIndex(const std::string& device) {
  if (device == "cuda") return 0;
  int index = 0;
  if (device.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(device.substr(5), &index) && index >= 0)
    return index;
  return absl::InvalidArgumentError(absl::StrCat("device \"", device, "\" is not cuda or cuda:N"));
}

}  // namespace bitserve
