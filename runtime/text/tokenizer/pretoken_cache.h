// Memo of BPE results by pre-token bytes. Text repeats its words, and merging a word costs far
// more than a hash lookup. Shared by all threads that encode with one tokenizer: sharded so that
// concurrent encoders rarely wait on one another.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace bitserve {

class PreTokenCache {
 public:
  // Bounds memory: long pre-tokens rarely repeat, and once a shard is full it stops learning
  // (as Hugging Face's BPE cache does) rather than paying for eviction.
  static constexpr size_t kMaxKeyBytes = 256;
  static constexpr size_t kMaxEntriesPerShard = 8192;

  // Appends the cached ids of `key` to `out`; false when not cached.
  bool Lookup(absl::string_view key, std::vector<int32_t>* out) const;
  void Insert(absl::string_view key, absl::Span<const int32_t> ids) const;

 private:
  static constexpr size_t kShards = 16;
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> entries ABSL_GUARDED_BY(mu);
  };
  Shard& ShardOf(absl::string_view key) const;

  mutable std::array<Shard, kShards> shards_;
};

}  // namespace bitserve
