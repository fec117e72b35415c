// The safetensors header: parsing and validation, no I/O.
//
// File layout (https://github.com/huggingface/safetensors):
//   [8 bytes: N, little-endian u64][N bytes: UTF-8 JSON object, space padded][data section]
// The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) plus an optional "__metadata__" object of strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace bitserve {

enum class DType { kBool, kU8, kI8, kU16, kI16, kF16, kBF16, kU32, kI32, kF32, kU64, kI64, kF64 };

// Accepts the safetensors names: "BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32",
// "F32", "U64", "I64", "F64".
absl::StatusOr<DType> ParseDType(std::string_view name);
std::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section

  int64_t num_elements() const;
  uint64_t num_bytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;              // sorted by begin offset
  std::map<std::string, std::string> metadata;  // "__metadata__" (string -> string only)
  uint64_t data_offset = 0;  // 8 + header length: where the data section starts in the file

  const TensorInfo* Find(std::string_view name) const;
};

// The reference library refuses headers above this size; so do we, before allocating anything.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Parses and fully validates the header of a safetensors file whose complete size is `file_size`,
// given at least its first bytes (`prefix` must contain the 8-byte length and the whole JSON
// header, otherwise an error). `file_name` only appears in error messages.
//
// A successful result guarantees: names are non-empty and unique; each shape has rank <= 8 and
// dims < 2^40; each tensor's byte size matches its shape and dtype; the tensors, sorted by begin,
// tile the data section [0, file_size - data_offset) exactly, without overlaps or holes, as the
// reference library requires.
// Errors: DATA_LOSS when the file is shorter than its header says (truncated), INVALID_ARGUMENT for
// every other malformed header; messages name the file and the tensor or field.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> prefix,
                                                         uint64_t file_size,
                                                         std::string_view file_name);

}  // namespace bitserve
