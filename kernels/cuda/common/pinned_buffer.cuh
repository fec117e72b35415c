// Page-locked host memory (cudaMallocHost) with move-only RAII: staging for the per-step copies
// between host and device (batch metadata in, sampled tokens out), which must be pinned for
// cudaMemcpyAsync to be asynchronous.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace bitserve::cuda {

template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  ~PinnedBuffer() { Reset(); }

  static absl::StatusOr<PinnedBuffer> Create(int64_t count) {
    PinnedBuffer buffer;
    if (count <= 0) return buffer;
    void* ptr = nullptr;
    const cudaError_t error = cudaMallocHost(&ptr, static_cast<size_t>(count) * sizeof(T));
    if (error != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("cudaMallocHost of ", count * static_cast<int64_t>(sizeof(T)),
                       " bytes failed: ", cudaGetErrorString(error)));
    }
    buffer.ptr_ = static_cast<T*>(ptr);
    buffer.count_ = count;
    return buffer;
  }

  T* get() const { return ptr_; }
  int64_t size() const { return count_; }
  T& operator[](int64_t i) const { return ptr_[i]; }

 private:
  void Reset() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }

  T* ptr_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace bitserve::cuda
