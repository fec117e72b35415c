#include "runtime/checkpoint/safetensors_archive.h"

#include <cerrno>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
// Far above any real index (a few MB for thousands of tensors); keeps a corrupt file from
// exhausting memory.
constexpr size_t kMaxIndexBytes = 100'000'000;

std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  std::string out = "'";
  out.append(s.substr(0, kMaxShown)).append(s.size() > kMaxShown ? "...'" : "'");
  return out;
}

// False for a missing path; an error when the path cannot be examined at all (e.g. EACCES).
absl::StatusOr<bool> Exists(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::ErrnoToStatus(ec.value(), absl::StrCat(path.string(), ": cannot stat"));
  }
  return fs::exists(status);
}

absl::StatusOr<std::string> ReadIndexFile(const fs::path& path) {
  const std::string name = path.string();
  std::FILE* f = std::fopen(name.c_str(), "rb");
  if (f == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat(name, ": cannot open"));
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    text.append(buffer, n);
    if (text.size() > kMaxIndexBytes) {
      std::fclose(f);
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": larger than ", kMaxIndexBytes, " bytes, not a shard index"));
    }
  }
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return absl::ErrnoToStatus(err, absl::StrCat(name, ": cannot read"));
  return text;
}

// nlohmann keeps the last of duplicate keys; a tensor listed twice in "weight_map" must be an error
// rather than a silent choice between two shards.
class WeightMapDuplicateFinder {
 public:
  bool OnEvent(Json::parse_event_t event, const Json& parsed) {
    using E = Json::parse_event_t;
    if (event == E::object_start || event == E::array_start) {
      // An index nests 3 deep; refusing far deeper input early bounds the parser's memory.
      if (containers_.size() >= 16) throw std::length_error("nested more than 16 levels deep");
      containers_.push_back(event == E::object_start);
    } else if (event == E::object_end || event == E::array_end) {
      if (!containers_.empty()) containers_.pop_back();
    } else if (event == E::key && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (containers_.size() == 1) {
        top_key_ = key;
      } else if (containers_.size() == 2 && containers_[1] && top_key_ == "weight_map" &&
                 !seen_.insert(key).second && duplicate_.empty()) {
        duplicate_ = key;
      }
    }
    return true;
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<bool> containers_;  // true: object
  std::string top_key_;
  std::unordered_set<std::string> seen_;
  std::string duplicate_;
};

// Shard names come from the index: anything but a plain file name could reach outside `dir`.
bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos && name.find("..") == std::string_view::npos;
}

struct ShardIndex {
  std::map<std::string, std::string, std::less<>> weight_map;  // tensor -> shard file name
  std::optional<uint64_t> total_size;
};

absl::StatusOr<ShardIndex> ParseIndex(const fs::path& path) {
  const std::string name = path.string();
  ASSIGN_OR_RETURN(const std::string text, ReadIndexFile(path));
  Json root;
  WeightMapDuplicateFinder duplicates;
  try {
    root = Json::parse(text, [&](int, Json::parse_event_t event, Json& parsed) {
      return duplicates.OnEvent(event, parsed);
    });
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": not valid JSON: ", std::string(e.what()).substr(0, 300)));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": must be a JSON object, got ", root.type_name()));
  }
  if (!duplicates.duplicate().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": \"weight_map\" lists tensor ",
                                                   Quote(duplicates.duplicate()), " twice"));
  }
  ShardIndex index;
  const auto weight_map = root.find("weight_map");
  if (weight_map == root.end() || !weight_map->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": \"weight_map\" must be an object of tensor name to shard file name, got ",
        weight_map == root.end() ? "nothing" : weight_map->type_name()));
  }
  for (const auto& [tensor, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": \"weight_map\" tensor ", Quote(tensor),
                       " must map to a file name, got ", shard.type_name()));
    }
    const auto& shard_name = shard.get_ref<const std::string&>();
    if (!IsPlainFileName(shard_name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": \"weight_map\" tensor ", Quote(tensor), " maps to ", Quote(shard_name),
          ", which is not a plain file name in the checkpoint directory"));
    }
    index.weight_map.emplace(tensor, shard_name);
  }
  const auto metadata = root.find("metadata");
  if (metadata != root.end() && !metadata->is_null()) {
    if (!metadata->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": \"metadata\" must be an object, got ", metadata->type_name()));
    }
    const auto total = metadata->find("total_size");
    if (total != metadata->end()) {
      if (total->is_number_unsigned()) {
        index.total_size = total->get<uint64_t>();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": \"metadata.total_size\" must be a non-negative integer, got ",
                         total->type_name()));
      }
    }
  }
  return index;
}

}  // namespace

absl::StatusOr<SafetensorsArchive> SafetensorsArchive::Open(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": not a checkpoint directory",
                                            ec ? absl::StrCat(" (", ec.message(), ")") : ""));
  }
  SafetensorsArchive archive;
  const fs::path index_path = dir / kIndexFile;
  ASSIGN_OR_RETURN(const bool sharded, Exists(index_path));
  if (!sharded) {
    const fs::path single_path = dir / kSingleFile;
    ASSIGN_OR_RETURN(const bool single, Exists(single_path));
    if (!single) {
      return absl::NotFoundError(
          absl::StrCat(dir.string(), ": holds neither ", kSingleFile, " nor ", kIndexFile));
    }
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path));
    for (const TensorInfo& info : file->header().tensors) {
      archive.entries_.emplace(info.name, Entry{&info, file.get(), file->Data(info)});
    }
    archive.files_.push_back(std::move(file));
    return archive;
  }

  const std::string index_name = index_path.string();
  ASSIGN_OR_RETURN(const ShardIndex index, ParseIndex(index_path));
  // Each shard once, in name order, so that errors are deterministic.
  std::map<std::string, std::string_view> first_tensor_of_shard;
  for (const auto& [tensor, shard] : index.weight_map) first_tensor_of_shard.emplace(shard, tensor);
  for (const auto& [shard, first_tensor] : first_tensor_of_shard) {
    const fs::path shard_path = dir / shard;
    ASSIGN_OR_RETURN(const bool present, Exists(shard_path));
    if (!present) {
      return absl::NotFoundError(absl::StrCat(shard_path.string(), ": shard file does not exist (",
                                              index_name, " maps tensor ", Quote(first_tensor),
                                              " to it)"));
    }
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(shard_path));
    for (const TensorInfo& info : file->header().tensors) {
      const auto earlier = archive.entries_.find(info.name);
      if (earlier != archive.entries_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", Quote(info.name), " appears in two shards: ",
                         earlier->second.file->path().string(), " and ", shard_path.string()));
      }
      const auto mapped = index.weight_map.find(info.name);
      if (mapped == index.weight_map.end()) {
        return absl::InvalidArgumentError(absl::StrCat(shard_path.string(), ": holds tensor ",
                                                       Quote(info.name), ", which ", index_name,
                                                       " does not list"));
      }
      if (mapped->second != shard) {
        return absl::InvalidArgumentError(absl::StrCat(shard_path.string(), ": holds tensor ",
                                                       Quote(info.name), ", which ", index_name,
                                                       " maps to ", Quote(mapped->second)));
      }
      archive.entries_.emplace(info.name, Entry{&info, file.get(), file->Data(info)});
    }
    archive.files_.push_back(std::move(file));
  }
  uint64_t total_bytes = 0;
  for (const auto& [tensor, shard] : index.weight_map) {
    if (!archive.entries_.contains(tensor)) {
      return absl::InvalidArgumentError(absl::StrCat(index_name, ": maps tensor ", Quote(tensor),
                                                     " to ", (dir / shard).string(),
                                                     ", which does not hold it"));
    }
  }
  for (const auto& [tensor, entry] : archive.entries_) total_bytes += entry.info->num_bytes();
  if (index.total_size && *index.total_size != total_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_name, ": \"metadata.total_size\" is ", *index.total_size,
                     " but the shards' tensors hold ", total_bytes, " bytes"));
  }
  return archive;
}

const SafetensorsArchive::Entry* SafetensorsArchive::Find(std::string_view name) const {
  const auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsArchive::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

}  // namespace bitserve
