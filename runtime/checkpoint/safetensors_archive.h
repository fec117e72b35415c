// A checkpoint directory: `model.safetensors`, or Hugging Face shards listed by
// `model.safetensors.index.json`. Every tensor is reachable by name, whichever file holds it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/safetensors_file.h"
#include "runtime/checkpoint/safetensors_header.h"

namespace bitserve {

class SafetensorsArchive {
 public:
  struct Entry {
    const TensorInfo* info;
    const SafetensorsFile* file;
    std::span<const uint8_t> bytes;
  };

  // When `dir/model.safetensors.index.json` exists it decides: its "weight_map" (tensor name ->
  // shard file name) must agree exactly with the shards' contents, and "metadata.total_size", when
  // present, must equal the tensors' total byte size. Otherwise `dir/model.safetensors` is read.
  // Errors name the directory or file and the tensor: NOT_FOUND for a missing checkpoint or shard,
  // INVALID_ARGUMENT for an inconsistent index, and whatever SafetensorsFile::Open reports.
  static absl::StatusOr<SafetensorsArchive> Open(const std::filesystem::path& dir);

  SafetensorsArchive(SafetensorsArchive&&) = default;
  SafetensorsArchive& operator=(SafetensorsArchive&&) = default;

  // nullptr when no file holds `name`. Entries and their bytes live as long as the archive (moves
  // included).
  const Entry* Find(std::string_view name) const;
  std::vector<std::string> TensorNames() const;  // sorted
  size_t num_files() const { return files_.size(); }

 private:
  SafetensorsArchive() = default;

  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace bitserve
