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
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace bitserve::scheduler {

class KvBlockAllocator {
 public:
  // num_blocks, block_size >= 1 (SchedulerConfig::Validate).
  KvBlockAllocator(int num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(owned_.size()); }
  int num_free_blocks() const { return static_cast<int>(free_.size()); }
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int64_t capacity_tokens() const { return int64_t{num_blocks()} * block_size_; }
  // Sequences that hold at least one block.
  int num_sequences() const { return static_cast<int>(tables_.size()); }

  int64_t BlocksForTokens(int64_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }
  // Blocks that seq_id must still gain to hold num_tokens tokens in all (0 when it already can).
  int64_t NewBlocksNeeded(uint64_t seq_id, int64_t num_tokens) const;

  // Grows seq_id's table until it holds num_tokens tokens. Returns false, allocating nothing, when
  // there are not enough free blocks. A table never shrinks until Free.
  [[nodiscard]] bool TryGrow(uint64_t seq_id, int64_t num_tokens);
  // Returns all of seq_id's blocks (nothing when it holds none).
  void Free(uint64_t seq_id);

  // seq_id's blocks in position order; empty when it holds none.
  const std::vector<int32_t>& block_table(uint64_t seq_id) const;

 private:
  int block_size_;
  // Last in, first out: a block freed a moment ago is reused first, while it is warm in caches.
  std::vector<int32_t> free_;
  std::vector<bool> owned_;  // per block: held by some table; catches double frees
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> tables_;
};

}  // namespace bitserve::scheduler
