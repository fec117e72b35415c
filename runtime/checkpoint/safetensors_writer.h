// Streaming safetensors writer: single file or Hugging Face shards + index, one tensor in memory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/checkpoint/safetensors_header.h"

namespace bitserve {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  // Writes exactly the tensor's bytes (num_bytes) into `out`; called once, in order, during Write.
  std::function<absl::Status(std::span<uint8_t> out)> fill;
};

struct WriteOptions {
  uint64_t max_shard_bytes = 4ull << 30;
  // Goes into every shard's "__metadata__" (e.g. {"format": "pt"}).
  std::map<std::string, std::string> metadata;
};

// Writes dir/model.safetensors, or, when the tensors' total exceeds max_shard_bytes, HF-style
// shards dir/model-00001-of-0000N.safetensors (5-digit numbers) plus
// dir/model.safetensors.index.json (metadata.total_size and weight_map). Tensors keep their given
// order; a shard is closed when the next tensor would push it past max_shard_bytes (a single tensor
// larger than the limit gets its own shard). Each header is padded with spaces to a multiple of 8
// bytes, as the reference library does.
//
// `dir` is created if missing. Everything is written to temporary files that are renamed into
// place only when all of them are complete, so a failure (including one returned by `fill`) leaves
// no half-written checkpoint. On success, files of an earlier checkpoint in `dir` that would
// contradict the new one (an index, a single file, or shards named model-NNNNN-of-NNNNN) are
// removed. Specs are validated first (unique non-empty names, rank <= 8, dims in [0, 2^40), a fill
// function): INVALID_ARGUMENT naming the tensor. I/O errors name the path and the errno text.
absl::Status WriteSafetensors(const std::filesystem::path& dir, std::vector<TensorSpec> tensors,
                              const WriteOptions& options = {});

}  // namespace bitserve
