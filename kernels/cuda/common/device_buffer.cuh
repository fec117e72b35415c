// Owning device memory (plain cudaMalloc) with move-only RAII, for tests, benchmarks and the
// kernels' own scratch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"

namespace bitserve::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { Reset(); }

  // ResourceExhausted names the size when the device is out of memory.
  static absl::StatusOr<DeviceBuffer> Create(int64_t count) {
    DeviceBuffer buffer;
    if (count <= 0) return buffer;
    void* ptr = nullptr;
    const cudaError_t error = cudaMalloc(&ptr, static_cast<size_t>(count) * sizeof(T));
    if (error != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("cudaMalloc of ", count * static_cast<int64_t>(sizeof(T)),
                       " bytes failed: ", cudaGetErrorString(error)));
    }
    buffer.ptr_ = static_cast<T*>(ptr);
    buffer.count_ = count;
    return buffer;
  }

  T* get() const { return ptr_; }
  int64_t size() const { return count_; }
  int64_t bytes() const { return count_ * static_cast<int64_t>(sizeof(T)); }

  absl::Status CopyFromHost(const T* src, int64_t count) {
    if (count > count_) return absl::OutOfRangeError("copy larger than the device buffer");
    BITSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(ptr_, src, static_cast<size_t>(count) * sizeof(T), cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }
  absl::Status CopyToHost(T* dst, int64_t count) const {
    if (count > count_) return absl::OutOfRangeError("copy larger than the device buffer");
    BITSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(dst, ptr_, static_cast<size_t>(count) * sizeof(T), cudaMemcpyDeviceToHost));
    return absl::OkStatus();
  }
  // Every byte set to `byte` (tests poison outputs with it).
  absl::Status FillBytes(unsigned char byte) {
    if (count_ == 0) return absl::OkStatus();
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemset(ptr_, byte, static_cast<size_t>(bytes())));
    return absl::OkStatus();
  }

 private:
  void Reset() {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }

  T* ptr_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace bitserve::cuda
