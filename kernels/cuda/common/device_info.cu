#include <atomic>

#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_info.cuh"

namespace bitserve::cuda {

absl::StatusOr<DeviceInfo> QueryDevice(int index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return absl::FailedPreconditionError("no CUDA device is visible");
  }
  if (index < 0 || index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda:", index, " does not exist; ", count, " device(s) visible"));
  }
  cudaDeviceProp prop;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, index));
  DeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.global_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  info.l2_bytes = prop.l2CacheSize;
  info.max_shared_per_block_optin = static_cast<int64_t>(prop.sharedMemPerBlockOptin);
  return info;
}

CurrentDeviceTraits GetCurrentDeviceTraits() {
  constexpr int kCached = 16;
  // 0: not read yet; else multiprocessors and 10 * major + minor.
  static std::atomic<int> multiprocessors[kCached] = {}, capability[kCached] = {};
  CurrentDeviceTraits traits;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return traits;
  }
  const bool cached = device >= 0 && device < kCached;
  if (cached && capability[device].load(std::memory_order_acquire) != 0) {
    traits.multiprocessors = multiprocessors[device].load(std::memory_order_relaxed);
    const int cc = capability[device].load(std::memory_order_relaxed);
    traits.compute_major = cc / 10;
    traits.compute_minor = cc % 10;
    return traits;
  }
  int sms = 0, major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return traits;
  }
  traits.multiprocessors = sms;
  traits.compute_major = major;
  traits.compute_minor = minor;
  if (cached) {
    multiprocessors[device].store(sms, std::memory_order_relaxed);
    capability[device].store(10 * major + minor, std::memory_order_release);
  }
  return traits;
}

}  // namespace bitserve::cuda
