#include "scheduler/kv_block_allocator.h"

#include "base/check.h"

namespace bitserve::scheduler {
namespace {

const std::vector<int32_t>& EmptyTable() {
  static const auto* const kEmpty = new std::vector<int32_t>();
  return *kEmpty;
}

}  // namespace

KvBlockAllocator::KvBlockAllocator(int num_blocks, int block_size, int num_pools)
    : block_size_(block_size), owned_(num_blocks, false) {
  BITSERVE_CHECK(num_blocks >= 1 && block_size >= 1 && num_pools >= 1 &&
                 num_blocks % num_pools == 0)
      << "num_blocks=" << num_blocks << " block_size=" << block_size << " num_pools=" << num_pools;
  pools_.resize(num_pools);
  const int per_pool = num_blocks / num_pools;
  for (int p = 0; p < num_pools; ++p) {
    std::vector<int32_t>& free = pools_[p].free;
    free.reserve(per_pool);
    // Reversed so that a fresh pool hands out its blocks in order: 0, 1, 2, ...
    for (int b = per_pool - 1; b >= 0; --b) free.push_back(p * per_pool + b);
  }
  num_free_ = num_blocks;
}

int KvBlockAllocator::PoolOf(uint64_t seq_id) const {
  const std::vector<int32_t>& table = block_table(seq_id);
  return table.empty() ? -1 : table.front() / pool_blocks();
}

int KvBlockAllocator::PoolFor(int64_t blocks) const {
  int best = -1;
  for (int p = 0; p < num_pools(); ++p) {
    if (num_free_blocks(p) < blocks) continue;
    if (best < 0 || num_sequences(p) < num_sequences(best) ||
        (num_sequences(p) == num_sequences(best) && num_free_blocks(p) > num_free_blocks(best))) {
      best = p;
    }
  }
  return best;
}

int64_t KvBlockAllocator::NewBlocksNeeded(uint64_t seq_id, int64_t num_tokens) const {
  const int64_t held = static_cast<int64_t>(block_table(seq_id).size());
  const int64_t needed = BlocksForTokens(num_tokens);
  return needed > held ? needed - held : 0;
}

bool KvBlockAllocator::TryGrow(uint64_t seq_id, int64_t num_tokens, int pool) {
  const int64_t more = NewBlocksNeeded(seq_id, num_tokens);
  if (more == 0) return true;
  const int held = PoolOf(seq_id);
  BITSERVE_CHECK(held < 0 || pool < 0 || pool == held)
      << "sequence " << seq_id << " holds blocks of pool " << held << ", not " << pool;
  if (held >= 0) pool = held;
  if (pool < 0) pool = PoolFor(more);
  if (pool < 0 || more > num_free_blocks(pool)) return false;
  BITSERVE_CHECK(pool < num_pools()) << "pool " << pool << " of " << num_pools();
  std::vector<int32_t>& free = pools_[pool].free;
  std::vector<int32_t>& table = tables_[seq_id];
  if (table.empty()) ++pools_[pool].sequences;
  for (int64_t i = 0; i < more; ++i) {
    const int32_t block = free.back();
    free.pop_back();
    BITSERVE_CHECK(!owned_[block]) << "block " << block << " handed out twice";
    owned_[block] = true;
    table.push_back(block);
  }
  num_free_ -= static_cast<int>(more);
  return true;
}

void KvBlockAllocator::Free(uint64_t seq_id) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return;
  Pool& pool = pools_[it->second.front() / pool_blocks()];
  // Pushed in reverse so that the sequence's first block is the next one handed out.
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) {
    BITSERVE_CHECK(owned_[*b]) << "block " << *b << " freed twice (sequence " << seq_id << ")";
    owned_[*b] = false;
    pool.free.push_back(*b);
  }
  num_free_ += static_cast<int>(it->second.size());
  --pool.sequences;
  tables_.erase(it);
}

const std::vector<int32_t>& KvBlockAllocator::block_table(uint64_t seq_id) const {
  auto it = tables_.find(seq_id);
  return it == tables_.end() ? EmptyTable() : it->second;
}

}  // namespace bitserve::scheduler
