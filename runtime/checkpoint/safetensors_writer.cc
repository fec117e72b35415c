#include "runtime/checkpoint/safetensors_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <memory>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
// The same limits the reader enforces, so that everything written can be read back.
constexpr size_t kMaxRank = 8;
constexpr int64_t kMaxDim = int64_t{1} << 40;

absl::Status ErrnoError(int err, const fs::path& path, const std::string& what) {
  return absl::ErrnoToStatus(err, absl::StrCat(path.string(), ": ", what));
}

// A file written under a hidden temporary name next to its final path; unlinked on destruction
// unless committed, so that every early return cleans up after itself.
class TempFile {
 public:
  static absl::StatusOr<std::unique_ptr<TempFile>> Create(fs::path final_path) {
    fs::path temp = final_path;
    temp.replace_filename(
        absl::StrCat(".", final_path.filename().string(), ".", ::getpid(), ".tmp"));
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError(errno, temp, "cannot create");
    return std::unique_ptr<TempFile>(new TempFile(std::move(final_path), std::move(temp), fd));
  }

  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  absl::Status Write(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);  // Linux writes at most ~2 GiB per call
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, temp_, "write failed");
      p += n;
      size -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  // Data reaches the disk before the rename makes it visible, so a crash never exposes a
  // checkpoint file with missing contents.
  absl::Status Close() {
    if (::fsync(fd_) != 0) return ErrnoError(errno, temp_, "fsync failed");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) return ErrnoError(errno, temp_, "close failed");
    return absl::OkStatus();
  }

  absl::Status Commit() {
    if (::rename(temp_.c_str(), final_.c_str()) != 0) {
      return ErrnoError(errno, final_, absl::StrCat("cannot rename ", temp_.string(), " to it"));
    }
    committed_ = true;
    return absl::OkStatus();
  }

  const fs::path& final_path() const { return final_; }

 private:
  TempFile(fs::path final_path, fs::path temp, int fd)
      : final_(std::move(final_path)), temp_(std::move(temp)), fd_(fd) {}

  fs::path final_;
  fs::path temp_;
  int fd_;
  bool committed_ = false;
};

// Byte size of each tensor, after checking everything the reader will check.
absl::StatusOr<std::vector<uint64_t>> ValidateSpecs(const std::vector<TensorSpec>& tensors) {
  std::vector<uint64_t> sizes;
  std::set<std::string_view> names;
  uint64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    const std::string where = absl::StrCat("tensor #", i, " '", t.name, "': ");
    auto invalid = [&](auto&&... parts) {
      return absl::InvalidArgumentError(absl::StrCat(where, parts...));
    };
    if (t.name.empty()) return invalid("empty name");
    if (t.name == "__metadata__") return invalid("\"__metadata__\" is reserved");
    if (!names.insert(t.name).second) return invalid("duplicate name");
    try {
      (void)nlohmann::json(t.name).dump();
    } catch (const std::exception& e) {
      return invalid("name is not valid UTF-8: ", e.what());
    }
    if (!t.fill) return invalid("no fill function");
    if (t.shape.size() > kMaxRank) return invalid("rank ", t.shape.size(), " > ", kMaxRank);
    uint64_t bytes = DTypeSize(t.dtype);
    bool empty = false;
    for (int64_t d : t.shape) {
      if (d < 0 || d >= kMaxDim) return invalid("dim ", d, " is outside [0, 2^40)");
      empty |= d == 0;
      if (!empty && __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
        return invalid("byte size overflows 64 bits");
      }
    }
    sizes.push_back(empty ? 0 : bytes);
    if (__builtin_add_overflow(total, sizes.back(), &total)) {
      return invalid("total byte size of the checkpoint overflows 64 bits");
    }
  }
  return sizes;
}

struct Shard {
  size_t first = 0, last = 0;  // tensor index range [first, last)
  std::string file_name;
};

std::vector<Shard> PlanShards(const std::vector<uint64_t>& sizes, uint64_t max_shard_bytes) {
  uint64_t total = 0;
  for (uint64_t s : sizes) total += s;
  if (total <= max_shard_bytes) return {Shard{0, sizes.size(), std::string(kSingleFile)}};
  std::vector<Shard> shards;
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const bool past_limit =
        shard_bytes > max_shard_bytes || sizes[i] > max_shard_bytes - shard_bytes;
    if (shards.empty() || (shard_bytes > 0 && past_limit)) {
      shards.push_back(Shard{i, i, ""});
      shard_bytes = 0;
    }
    shards.back().last = i + 1;
    shard_bytes += sizes[i];
  }
  for (size_t k = 0; k < shards.size(); ++k) {
    shards[k].file_name = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, shards.size());
  }
  return shards;
}

// The reference library pads the JSON with spaces so that the data section starts 8-byte aligned.
std::string ShardHeader(const std::vector<TensorSpec>& tensors, const std::vector<uint64_t>& sizes,
                        const Shard& shard, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = shard.first; i < shard.last; ++i) {
    header[tensors[i].name] = {{"dtype", DTypeName(tensors[i].dtype)},
                               {"shape", tensors[i].shape},
                               {"data_offsets", {offset, offset + sizes[i]}}};
    offset += sizes[i];
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

absl::Status WriteShard(const std::vector<TensorSpec>& tensors, const std::vector<uint64_t>& sizes,
                        const Shard& shard, const std::string& header, TempFile& file,
                        std::vector<uint8_t>& buffer) {
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  RETURN_IF_ERROR(file.Write(length, sizeof(length)));
  RETURN_IF_ERROR(file.Write(header.data(), header.size()));
  for (size_t i = shard.first; i < shard.last; ++i) {
    // Zeroed, so that a fill that skips bytes still gives deterministic output.
    try {
      buffer.assign(sizes[i], 0);
    } catch (const std::exception& e) {
      return absl::ResourceExhaustedError(absl::StrCat(file.final_path().string(), ": tensor '",
                                                       tensors[i].name, "': cannot allocate ",
                                                       sizes[i], " bytes: ", e.what()));
    }
    const absl::Status filled = tensors[i].fill(std::span<uint8_t>(buffer));
    if (!filled.ok()) {
      return absl::Status(filled.code(),
                          absl::StrCat(file.final_path().string(), ": tensor '", tensors[i].name,
                                       "': fill failed: ", filled.message()));
    }
    RETURN_IF_ERROR(file.Write(buffer.data(), buffer.size()));
  }
  return absl::OkStatus();
}

bool IsShardFileName(const std::string& name) {
  // model-NNNNN-of-NNNNN.safetensors
  if (name.size() != 32 || !name.starts_with("model-") || name.substr(11, 4) != "-of-" ||
      !name.ends_with(".safetensors")) {
    return false;
  }
  for (size_t i : {6, 7, 8, 9, 10, 15, 16, 17, 18, 19}) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

absl::Status RemoveIfExists(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, path, "cannot remove file of the previous checkpoint");
  }
  return absl::OkStatus();
}

// Old shards must go: a later reader checks that the index and the shards agree, but a stale shard
// that no index names would only waste space and confuse people.
absl::Status RemoveStaleShards(const fs::path& dir, const std::set<std::string>& keep) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsShardFileName(name) && !keep.contains(name)) stale.push_back(it->path());
  }
  if (ec) return ErrnoError(ec.value(), dir, "cannot list directory");
  for (const fs::path& path : stale) RETURN_IF_ERROR(RemoveIfExists(path));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSafetensors(const fs::path& dir, std::vector<TensorSpec> tensors,
                              const WriteOptions& options) {
  if (options.max_shard_bytes == 0) {
    return absl::InvalidArgumentError("WriteOptions.max_shard_bytes must be positive");
  }
  ASSIGN_OR_RETURN(const std::vector<uint64_t> sizes, ValidateSpecs(tensors));
  std::string index_text;
  const std::vector<Shard> shards = PlanShards(sizes, options.max_shard_bytes);
  std::vector<std::string> headers;
  try {
    for (const Shard& shard : shards) {
      headers.push_back(ShardHeader(tensors, sizes, shard, options.metadata));
    }
    if (shards.size() > 1) {
      // Same layout as transformers' save_pretrained (sorted keys, indent 2).
      nlohmann::json index;
      uint64_t total = 0;
      for (uint64_t s : sizes) total += s;
      index["metadata"]["total_size"] = total;
      index["weight_map"] = nlohmann::json::object();
      for (const Shard& shard : shards) {
        for (size_t i = shard.first; i < shard.last; ++i) {
          index["weight_map"][tensors[i].name] = shard.file_name;
        }
      }
      index_text = index.dump(2) + "\n";
    }
  } catch (const std::exception& e) {  // only invalid UTF-8 in metadata is left to fail here
    return absl::InvalidArgumentError(absl::StrCat(
        dir.string(), ": cannot encode the header (WriteOptions.metadata): ", e.what()));
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoError(ec.value(), dir, "cannot create directory");

  std::vector<std::unique_ptr<TempFile>> files;
  std::vector<uint8_t> buffer;  // the one tensor in memory, reused
  for (size_t k = 0; k < shards.size(); ++k) {
    ASSIGN_OR_RETURN(auto file, TempFile::Create(dir / shards[k].file_name));
    RETURN_IF_ERROR(WriteShard(tensors, sizes, shards[k], headers[k], *file, buffer));
    RETURN_IF_ERROR(file->Close());
    files.push_back(std::move(file));
  }
  buffer = {};
  if (!index_text.empty()) {
    ASSIGN_OR_RETURN(auto file, TempFile::Create(dir / kIndexFile));
    RETURN_IF_ERROR(file->Write(index_text.data(), index_text.size()));
    RETURN_IF_ERROR(file->Close());
    files.push_back(std::move(file));
  }

  // The index is renamed last and a stale index removed right after the new single file appears:
  // at every moment the directory still reads as one complete checkpoint, the old or the new one.
  for (auto& file : files) RETURN_IF_ERROR(file->Commit());
  std::set<std::string> keep;
  if (shards.size() == 1) {
    RETURN_IF_ERROR(RemoveIfExists(dir / kIndexFile));
  } else {
    RETURN_IF_ERROR(RemoveIfExists(dir / kSingleFile));
    for (const Shard& shard : shards) keep.insert(shard.file_name);
  }
  RETURN_IF_ERROR(RemoveStaleShards(dir, keep));

  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoError(errno, dir, "cannot open directory to sync it");
  const int synced = ::fsync(dir_fd);
  const int sync_errno = errno;
  ::close(dir_fd);
  if (synced != 0) return ErrnoError(sync_errno, dir, "fsync failed");
  return absl::OkStatus();
}

}  // namespace bitserve
