#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_info.cuh"

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

}  // namespace bitserve::cuda
