// One safetensors file, memory-mapped read-only, with its validated header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <utility>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/safetensors_header.h"

namespace bitserve {

class SafetensorsFile {
 public:
  // Maps `path` and validates its header (see ParseSafetensorsHeader). Errors name the path; an
  // empty file or anything but a regular file is an error.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const SafetensorsHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return path_; }

  // The bytes of `tensor`, which must come from this file's header(). Not aligned beyond 1 byte:
  // the data section starts wherever the header ends. Valid while this object lives. (If another
  // process truncates the file meanwhile, reading the bytes raises SIGBUS: mmap cannot guard that.)
  std::span<const uint8_t> Data(const TensorInfo& tensor) const;

 private:
  SafetensorsFile(std::filesystem::path path, const uint8_t* base, size_t size,
                  SafetensorsHeader header)
      : path_(std::move(path)), base_(base), size_(size), header_(std::move(header)) {}

  std::filesystem::path path_;
  const uint8_t* base_;
  size_t size_;
  SafetensorsHeader header_;
};

}  // namespace bitserve
