// Block bookkeeping of the paged KV cache (DESIGN.md "KV cache"). The workers' KV memory is
// num_blocks blocks of block_size token slots each; a sequence's token at position p lives in
// slot p % block_size of block block_table[p / block_size]:
//
//   block_table = {7, 2, 9}, block_size = 4
//   positions    0 1 2 3 | 4 5 6 7 | 8 9
//   block        7       | 2       | 9 (slots 2, 3 free for the next tokens)
//
// This class only hands out block ids and owns the per-sequence tables; the memory stays with the
// workers, and each step plan carries the tables they need.
//
// Pools: an expert-parallel group runs attention data-parallel, each rank its own sequences in
// its own KV memory (DESIGN.md "Parallelism"). The block ids are then split into num_pools equal
// pools, pool r = ids [r * pool_blocks, (r + 1) * pool_blocks) = rank r's memory, and all blocks
// of one sequence come from one pool: the pool chosen when it gets its first block (PoolFor),
// kept until Free. With one pool (no EP) nothing changes.
//
// Prefix caching: a full block whose KV is computed may be published under its content address
// (block_hash.h). Later sequences whose tokens start the same way attach the published blocks
// (MatchPrefix, AttachPrefix) instead of computing them again; a block is shared by reference
// count and never written again (a sequence writes only past its attached prefix, and only full
// blocks are published). When its last holder frees it, a published block stays cached, idle,
// until its memory is needed: idle blocks count as free and are taken, least recently used first,
// once no never-cached block is left. Each pool has its own cache (its own rank's memory).
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "scheduler/block_hash.h"

namespace bitserve::scheduler {

class KvBlockAllocator {
 public:
  // num_blocks, block_size, num_pools >= 1, num_pools dividing num_blocks
  // (SchedulerConfig::Validate).
  KvBlockAllocator(int num_blocks, int block_size, int num_pools = 1);

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(refs_.size()); }
  int num_free_blocks() const { return num_free_; }
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int64_t capacity_tokens() const { return int64_t{num_blocks()} * block_size_; }
  // Sequences that hold at least one block.
  int num_sequences() const { return static_cast<int>(tables_.size()); }

  int num_pools() const { return static_cast<int>(pools_.size()); }
  int pool_blocks() const { return num_blocks() / num_pools(); }
  // What one sequence can hold at most: its pool's capacity.
  int64_t pool_capacity_tokens() const { return int64_t{pool_blocks()} * block_size_; }
  int num_free_blocks(int pool) const {
    return static_cast<int>(pools_[pool].free.size() + pools_[pool].idle.size());
  }
  int num_sequences(int pool) const { return pools_[pool].sequences; }
  // The pool of seq_id's blocks; -1 when it holds none.
  int PoolOf(uint64_t seq_id) const;
  // Where a new sequence whose first step needs `blocks` blocks goes: the pool running the fewest
  // sequences among those with that many free blocks (ties: most free blocks, then the lowest
  // index), so that the ranks share the sequences; -1 when no pool has them.
  int PoolFor(int64_t blocks) const;

  int64_t BlocksForTokens(int64_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }
  // Blocks that seq_id must still gain to hold num_tokens tokens in all (0 when it already can).
  int64_t NewBlocksNeeded(uint64_t seq_id, int64_t num_tokens) const;

  // Grows seq_id's table until it holds num_tokens tokens, from its pool (a sequence that holds no
  // block yet: from `pool`, or PoolFor's choice when -1). Returns false, allocating nothing, when
  // the pool has not enough free blocks. A table never shrinks until Free.
  [[nodiscard]] bool TryGrow(uint64_t seq_id, int64_t num_tokens, int pool = -1);
  // Returns all of seq_id's blocks (nothing when it holds none).
  void Free(uint64_t seq_id);

  // seq_id's blocks in position order; empty when it holds none.
  const std::vector<int32_t>& block_table(uint64_t seq_id) const;

  // ---- Prefix caching ----
  struct PrefixMatch {
    int blocks = 0;  // leading hashes published in the pool
    int idle = 0;    // of those, blocks no sequence holds (counted as free until attached)
  };
  PrefixMatch MatchPrefix(int pool, std::span<const BlockHash> hashes) const;
  // seq_id, holding no block, starts with the first `blocks` published blocks of `hashes` in
  // `pool` (blocks <= MatchPrefix(pool, hashes).blocks).
  void AttachPrefix(uint64_t seq_id, int pool, std::span<const BlockHash> hashes, int blocks);
  // seq_id's block `index` is full and its KV computed: published under `hash`, unless it already
  // is or the pool has another block under that hash (the same content computed twice).
  void Publish(uint64_t seq_id, int index, const BlockHash& hash);
  // Forgets every published block (the workers' KV memory was lost): idle ones become free, held
  // ones are no longer shared with later sequences.
  void ClearCache();
  // Published blocks, held or idle.
  int num_cached_blocks() const { return num_cached_; }

 private:
  struct Pool {
    // Never-cached free blocks. Last in, first out: a block freed a moment ago is reused first,
    // while it is warm in caches.
    std::vector<int32_t> free;
    // Published blocks no sequence holds, least recently freed first (evicted in this order).
    std::list<int32_t> idle;
    absl::flat_hash_map<BlockHash, int32_t> published;
    int sequences = 0;
  };
  int PoolOfBlock(int32_t block) const { return block / pool_blocks(); }
  // A free block of `pool` (evicting the least recently used idle one when no other is free),
  // held once.
  int32_t Take(int pool);

  int block_size_;
  std::vector<Pool> pools_;
  int num_free_ = 0;  // free and idle blocks of all pools
  int num_cached_ = 0;
  std::vector<int32_t> refs_;  // per block: tables holding it; catches double frees
  std::vector<std::optional<BlockHash>> hash_;         // per block: its published name
  std::vector<std::list<int32_t>::iterator> idle_at_;  // per idle block: its place in `idle`
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> tables_;
};

}  // namespace bitserve::scheduler
