#include "runtime/checkpoint/safetensors_header.h"

#include <algorithm>
#include <array>
#include <exception>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace bitserve {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxRank = 8;
constexpr uint64_t kMaxDim = uint64_t{1} << 40;
// A valid header nests 3 deep (root, entry, shape). Deeper input is refused while parsing, before
// millions of levels (a 100 MB header allows that many) cost gigabytes of parser state; the
// margin keeps precise type errors for near misses such as "shape": [[1]].
constexpr int kMaxJsonDepth = 8;

struct JsonTooDeep {};

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr std::array<DTypeEntry, 13> kDTypes = {{
    {DType::kBool, "BOOL", 1},
    {DType::kU8, "U8", 1},
    {DType::kI8, "I8", 1},
    {DType::kU16, "U16", 2},
    {DType::kI16, "I16", 2},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kU32, "U32", 4},
    {DType::kI32, "I32", 4},
    {DType::kF32, "F32", 4},
    {DType::kU64, "U64", 8},
    {DType::kI64, "I64", 8},
    {DType::kF64, "F64", 8},
}};

// Names and strings come from untrusted files: control bytes are escaped and the length capped so
// that an error message stays one readable line.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  std::string out = "'";
  for (char c : s.substr(0, kMaxShown)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += {'\\', 'x', kHex[u >> 4], kHex[u & 15]};
    } else {
      out += c;
    }
  }
  if (s.size() > kMaxShown) out += "...";
  out += "'";
  return out;
}

// Never dumps arrays or objects: they can be arbitrarily large or deep.
std::string Describe(const Json& v) {
  if (v.is_number_unsigned()) return absl::StrCat("number ", v.get<uint64_t>());
  if (v.is_number_integer()) return absl::StrCat("number ", v.get<int64_t>());
  if (v.is_number_float()) return absl::StrCat("non-integer number ", v.get<double>());
  if (v.is_string()) return absl::StrCat("string ", Quote(v.get_ref<const std::string&>()));
  if (v.is_array()) return absl::StrCat("array of ", v.size());
  return v.type_name();
}

// nlohmann parses "-0" as a signed integer; it is still a valid zero.
std::optional<uint64_t> AsUint(const Json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() == 0) return 0;
  return std::nullopt;
}

// Offset of the first byte that is not valid UTF-8 (RFC 3629: no overlongs, no surrogates, nothing
// past U+10FFFF), or npos.
size_t FindInvalidUtf8(std::string_view s) {
  static constexpr uint32_t kMinCodePoint[] = {0, 0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (s.size() - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < kMinCodePoint[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return i;
    i += len;
  }
  return std::string_view::npos;
}

// nlohmann keeps the last of duplicate keys, but a silently dropped tensor would load the wrong
// weights (and the reference library rejects duplicates), so the keys of every open object are
// tracked through the parser callback.
class DuplicateKeyFinder {
 public:
  bool OnEvent(Json::parse_event_t event, const Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_.empty()) open_.pop_back();
        break;
      case Json::parse_event_t::key: {
        if (open_.empty() || !parsed.is_string()) break;
        const auto& key = parsed.get_ref<const std::string&>();
        if (!open_.back().keys.insert(key).second && !found_) {
          found_ = true;
          depth_ = open_.size();
          key_ = key;
          entry_ = open_.front().last_key;
        }
        open_.back().last_key = key;
        break;
      }
      default:
        break;
    }
    return true;  // keep every value
  }

  absl::Status ToStatus(const std::string& file_name) const {
    if (!found_) return absl::OkStatus();
    if (depth_ == 1 && key_ == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name, ": \"__metadata__\" appears twice"));
    }
    if (depth_ == 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name, ": duplicate tensor name ", Quote(key_)));
    }
    const std::string owner =
        entry_ == "__metadata__" ? "\"__metadata__\"" : absl::StrCat("tensor ", Quote(entry_));
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": ", owner, ": duplicate key ", Quote(key_)));
  }

 private:
  struct OpenObject {
    std::unordered_set<std::string> keys;
    std::string last_key;
  };
  std::vector<OpenObject> open_;
  bool found_ = false;
  size_t depth_ = 0;
  std::string key_, entry_;
};

absl::StatusOr<std::map<std::string, std::string>> ParseMetadata(const Json& value,
                                                                 const std::string& file) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": \"__metadata__\" must be an object of string to string, got ", Describe(value)));
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": \"__metadata__\" key ", Quote(key),
                                                     " must map to a string, got ", Describe(v)));
    }
    metadata.emplace(key, v.get<std::string>());
  }
  return metadata;
}

// Byte size of a tensor, or nullopt on uint64 overflow. A zero dim makes the tensor empty whatever
// the other dims are, so it is checked before multiplying.
std::optional<uint64_t> ShapeBytes(const std::vector<int64_t>& shape, size_t dtype_size) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  uint64_t bytes = dtype_size;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) return std::nullopt;
  }
  return bytes;
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const Json& entry,
                                      uint64_t data_size, const std::string& file) {
  const std::string where = absl::StrCat(file, ": tensor ", Quote(name), ": ");
  auto invalid = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(where, parts...));
  };
  if (!entry.is_object()) {
    return invalid("entry must be an object with \"dtype\", \"shape\" and \"data_offsets\", got ",
                   Describe(entry));
  }
  for (const auto& [key, v] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return invalid("unknown key ", Quote(key),
                     "; an entry has only \"dtype\", \"shape\" and \"data_offsets\"");
    }
  }
  TensorInfo info;
  info.name = name;

  const auto dtype = entry.find("dtype");
  if (dtype == entry.end()) return invalid("missing \"dtype\"");
  if (!dtype->is_string()) return invalid("\"dtype\" must be a string, got ", Describe(*dtype));
  const auto parsed_dtype = ParseDType(dtype->get_ref<const std::string&>());
  if (!parsed_dtype.ok()) return invalid(parsed_dtype.status().message());
  info.dtype = *parsed_dtype;

  const auto shape = entry.find("shape");
  if (shape == entry.end()) return invalid("missing \"shape\"");
  if (!shape->is_array()) {
    return invalid("\"shape\" must be an array of non-negative integers, got ", Describe(*shape));
  }
  if (shape->size() > kMaxRank) {
    return invalid("\"shape\" has rank ", shape->size(), ", more than ", kMaxRank);
  }
  for (size_t i = 0; i < shape->size(); ++i) {
    const auto dim = AsUint((*shape)[i]);
    if (!dim) {
      return invalid("\"shape\"[", i, "] must be a non-negative integer, got ",
                     Describe((*shape)[i]));
    }
    if (*dim >= kMaxDim) return invalid("\"shape\"[", i, "] = ", *dim, " is not below 2^40");
    info.shape.push_back(static_cast<int64_t>(*dim));
  }

  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end()) return invalid("missing \"data_offsets\"");
  if (!offsets->is_array() || offsets->size() != 2) {
    return invalid("\"data_offsets\" must be an array of two non-negative integers [begin, end], ",
                   "got ", Describe(*offsets));
  }
  const auto begin = AsUint((*offsets)[0]);
  const auto end = AsUint((*offsets)[1]);
  if (!begin || !end) {
    return invalid("\"data_offsets\" must be two non-negative integers, got ",
                   Describe((*offsets)[begin ? 1 : 0]));
  }
  if (*begin > *end) return invalid("\"data_offsets\" [", *begin, ", ", *end, "] has begin > end");
  info.begin = *begin;
  info.end = *end;

  const auto bytes = ShapeBytes(info.shape, DTypeSize(info.dtype));
  if (!bytes) return invalid("shape times dtype size overflows 64 bits");
  if (*bytes != info.num_bytes()) {
    return invalid("\"data_offsets\" [", info.begin, ", ", info.end, ") span ", info.num_bytes(),
                   " bytes, but the shape and dtype ", std::string(DTypeName(info.dtype)), " need ",
                   *bytes);
  }
  if (info.end > data_size) {
    return absl::DataLossError(absl::StrCat(
        where, "data [", info.begin, ", ", info.end, ") runs past the end of the file: the data ",
        "section has only ", data_size, " bytes (file truncated?)"));
  }
  return info;
}

// The reference library requires the sorted tensors to tile the data section exactly: no byte may
// belong to two tensors, none to no tensor.
absl::Status CheckCoverage(const std::vector<TensorInfo>& tensors, uint64_t data_size,
                           const std::string& file) {
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin < covered) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": tensor ", Quote(t.name), " bytes [", t.begin, ", ", t.end, ") overlap tensor ",
          Quote(previous->name), " bytes [", previous->begin, ", ", previous->end, ")"));
    }
    if (t.begin > covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": data section bytes [", covered, ", ", t.begin,
                       ") belong to no tensor (hole before tensor ", Quote(t.name),
                       "); tensors must cover the data section contiguously"));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": data section bytes [", covered, ", ", data_size, ") belong to no tensor",
        previous ? absl::StrCat(" (after tensor ", Quote(previous->name), ")") : std::string(),
        "; tensors must cover the data section to its end"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype ", Quote(name),
      "; expected one of BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64"));
}

std::string_view DTypeName(DType dtype) { return kDTypes[static_cast<size_t>(dtype)].name; }

size_t DTypeSize(DType dtype) { return kDTypes[static_cast<size_t>(dtype)].size; }

int64_t TensorInfo::num_elements() const {
  // Unsigned so that a shape that never went through validation wraps instead of being UB.
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

const TensorInfo* SafetensorsHeader::Find(std::string_view name) const {
  for (const TensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> prefix,
                                                         uint64_t file_size,
                                                         std::string_view file_name) {
  const std::string file(file_name);
  if (prefix.size() > file_size) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": given prefix of ", prefix.size(),
                                                   " bytes is longer than the file size ",
                                                   file_size));
  }
  if (file_size < 8) {
    return absl::DataLossError(absl::StrCat(file, ": file is ", file_size,
                                            " bytes, shorter than the 8-byte header length"));
  }
  if (prefix.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": given prefix of ", prefix.size(),
                     " bytes does not hold the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | prefix[i];
  if (header_len == 0) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": header length is 0"));
  }
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": header length ", header_len,
                                                   " exceeds the limit of ",
                                                   kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > file_size - 8) {
    return absl::DataLossError(absl::StrCat(file, ": header length ", header_len,
                                            " runs past the end of the file (", file_size,
                                            " bytes; truncated?)"));
  }
  if (prefix.size() - 8 < header_len) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": given prefix of ", prefix.size(),
                                                   " bytes does not hold the whole header (",
                                                   8 + header_len, " bytes)"));
  }

  SafetensorsHeader header;
  header.data_offset = 8 + header_len;
  const uint64_t data_size = file_size - header.data_offset;
  const std::string_view text(reinterpret_cast<const char*>(prefix.data() + 8), header_len);

  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": header is not valid UTF-8 (at header byte ", bad, ")"));
  }
  if (text.front() != '{') {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": header must be a JSON object starting with '{', but starts with ",
                     Quote(text.substr(0, 1))));
  }
  Json root;
  DuplicateKeyFinder duplicates;
  try {
    root = Json::parse(
        text.begin(), text.end(),
        [&](int depth, Json::parse_event_t event, Json& parsed) {
          if ((event == Json::parse_event_t::object_start ||
               event == Json::parse_event_t::array_start) &&
              depth >= kMaxJsonDepth) {
            throw JsonTooDeep();
          }
          return duplicates.OnEvent(event, parsed);
        },
        /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const JsonTooDeep&) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": header nests JSON more than ", kMaxJsonDepth, " levels deep"));
  } catch (const std::exception& e) {
    // nlohmann echoes the last token, which may be huge.
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": header is not valid JSON: ", std::string(e.what()).substr(0, 300)));
  }
  RETURN_IF_ERROR(duplicates.ToStatus(file));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": header must be a JSON object, got ", Describe(root)));
  }

  header.tensors.reserve(root.size());
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      ASSIGN_OR_RETURN(header.metadata, ParseMetadata(value, file));
      continue;
    }
    if (key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": a tensor name is empty"));
    }
    ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(key, value, data_size, file));
    header.tensors.push_back(std::move(info));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  RETURN_IF_ERROR(CheckCoverage(header.tensors, data_size, file));
  return header;
}

}  // namespace bitserve
