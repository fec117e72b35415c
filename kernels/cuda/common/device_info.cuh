// What the engine needs to know about a GPU before it sizes its kernels and memory.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace bitserve::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  int64_t global_memory_bytes = 0;
  int64_t l2_bytes = 0;
  int64_t max_shared_per_block_optin = 0;
};

// FailedPrecondition when no CUDA device is visible or `index` is out of range.
absl::StatusOr<DeviceInfo> QueryDevice(int index);

// The current device's multiprocessor count and compute capability, read once per device and then
// cached, so kernel launchers may ask on every call. {132, 0, 0} when no device answers.
struct CurrentDeviceTraits {
  int multiprocessors = 132;
  int compute_major = 0, compute_minor = 0;
};
CurrentDeviceTraits GetCurrentDeviceTraits();

}  // namespace bitserve::cuda
