#include "runtime/checkpoint/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace bitserve {

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(name, ": cannot open"));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat(name, ": cannot stat"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a regular file"));
  }
  if (st.st_size == 0) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(name, ": file is empty, not a safetensors file"));
  }
  const auto size = static_cast<size_t>(st.st_size);
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (base == MAP_FAILED) {
    return absl::ErrnoToStatus(mmap_errno, absl::StrCat(name, ": cannot mmap ", size, " bytes"));
  }
  const auto* bytes = static_cast<const uint8_t*>(base);
  auto header = ParseSafetensorsHeader(std::span(bytes, size), size, name);
  if (!header.ok()) {
    ::munmap(base, size);
    return header.status();
  }
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, bytes, size, *std::move(header)));
}

SafetensorsFile::~SafetensorsFile() { ::munmap(const_cast<uint8_t*>(base_), size_); }

std::span<const uint8_t> SafetensorsFile::Data(const TensorInfo& tensor) const {
  BITSERVE_CHECK(tensor.begin <= tensor.end && tensor.end <= size_ - header_.data_offset)
      << path_.string() << ": tensor '" << tensor.name << "' [" << tensor.begin << ", "
      << tensor.end << ") is not from this file";
  return std::span(base_ + header_.data_offset + tensor.begin, tensor.num_bytes());
}

}  // namespace bitserve
