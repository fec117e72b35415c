#include "runtime/text/tokenizer/pretoken_cache.h"

#include "absl/hash/hash.h"

namespace bitserve {

PreTokenCache::Shard& PreTokenCache::ShardOf(absl::string_view key) const {
  // The high bits: the maps inside use the low ones for their own buckets.
  return shards_[(absl::Hash<absl::string_view>{}(key) >> 52) % kShards];
}

bool PreTokenCache::Lookup(absl::string_view key, std::vector<int32_t>* out) const {
  if (key.size() > kMaxKeyBytes) return false;
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.entries.find(key);
  if (it == shard.entries.end()) return false;
  out->insert(out->end(), it->second.begin(), it->second.end());
  return true;
}

void PreTokenCache::Insert(absl::string_view key, absl::Span<const int32_t> ids) const {
  if (key.size() > kMaxKeyBytes) return;
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  if (shard.entries.size() >= kMaxEntriesPerShard) return;
  shard.entries.try_emplace(key, ids.begin(), ids.end());
}

}  // namespace bitserve
