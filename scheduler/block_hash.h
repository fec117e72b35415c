// Content addresses of full KV blocks for prefix caching (kv_block_allocator.h): block i of a
// sequence is named by a 128-bit hash chained over the token ids of blocks 0 .. i, so that two
// sequences share block i only when all their tokens up to its end are the same. 128 bits: a
// collision (two different prefixes, one name, wrong attention) is not a practical concern.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

namespace bitserve::scheduler {

struct BlockHash {
  uint64_t hi = 0, lo = 0;
  friend bool operator==(const BlockHash& a, const BlockHash& b) {
    return a.hi == b.hi && a.lo == b.lo;
  }
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& k) {
    return H::combine(std::move(h), k.hi, k.lo);
  }
};

// The name of a block holding `tokens` after the blocks named by `parent` (the first block's
// parent: a root that names what else the cache depends on, see RootBlockHash).
BlockHash ChainBlockHash(const BlockHash& parent, std::span<const int32_t> tokens);

// The parent of a sequence's first block: the block size (and a fixed tag). The KV cache's model,
// dtype and key rotation (EngineOptions::kv_dtype, kv_rotation) are fixed for a scheduler's
// lifetime, so nothing else needs naming.
BlockHash RootBlockHash(int block_size);

}  // namespace bitserve::scheduler
