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
    : block_size_(block_size), refs_(num_blocks, 0), hash_(num_blocks), idle_at_(num_blocks) {
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
  return table.empty() ? -1 : PoolOfBlock(table.front());
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

int32_t KvBlockAllocator::Take(int pool) {
  Pool& p = pools_[pool];
  int32_t block;
  if (!p.free.empty()) {
    block = p.free.back();
    p.free.pop_back();
  } else {
    BITSERVE_CHECK(!p.idle.empty()) << "pool " << pool << " has no free block";
    block = p.idle.front();
    p.idle.pop_front();
    p.published.erase(*hash_[block]);
    hash_[block].reset();
    --num_cached_;
  }
  BITSERVE_CHECK(refs_[block] == 0) << "block " << block << " handed out twice";
  refs_[block] = 1;
  --num_free_;
  return block;
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
  std::vector<int32_t>& table = tables_[seq_id];
  if (table.empty()) ++pools_[pool].sequences;
  for (int64_t i = 0; i < more; ++i) table.push_back(Take(pool));
  return true;
}

void KvBlockAllocator::Free(uint64_t seq_id) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return;
  Pool& pool = pools_[PoolOfBlock(it->second.front())];
  // In reverse: the sequence's first block is the next one handed out (never-cached blocks), or
  // the last one evicted (published blocks: a prompt's first blocks are the most shared).
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) {
    BITSERVE_CHECK(refs_[*b] > 0) << "block " << *b << " freed twice (sequence " << seq_id << ")";
    if (--refs_[*b] > 0) continue;  // another sequence still reads it
    if (hash_[*b]) {
      idle_at_[*b] = pool.idle.insert(pool.idle.end(), *b);
    } else {
      pool.free.push_back(*b);
    }
    ++num_free_;
  }
  --pool.sequences;
  tables_.erase(it);
}

KvBlockAllocator::PrefixMatch KvBlockAllocator::MatchPrefix(
    int pool, std::span<const BlockHash> hashes) const {
  PrefixMatch m;
  const Pool& p = pools_[pool];
  for (const BlockHash& h : hashes) {
    auto it = p.published.find(h);
    if (it == p.published.end()) break;
    ++m.blocks;
    if (refs_[it->second] == 0) ++m.idle;
  }
  return m;
}

void KvBlockAllocator::AttachPrefix(uint64_t seq_id, int pool, std::span<const BlockHash> hashes,
                                    int blocks) {
  if (blocks == 0) return;
  BITSERVE_CHECK(block_table(seq_id).empty()) << "sequence " << seq_id << " already holds blocks";
  Pool& p = pools_[pool];
  std::vector<int32_t>& table = tables_[seq_id];
  for (int i = 0; i < blocks; ++i) {
    auto it = p.published.find(hashes[i]);
    BITSERVE_CHECK(it != p.published.end())
        << "block " << i << " of sequence " << seq_id << " is not published in pool " << pool;
    const int32_t block = it->second;
    if (refs_[block]++ == 0) {
      p.idle.erase(idle_at_[block]);
      --num_free_;
    }
    table.push_back(block);
  }
  ++p.sequences;
}

void KvBlockAllocator::Publish(uint64_t seq_id, int index, const BlockHash& hash) {
  const std::vector<int32_t>& table = block_table(seq_id);
  BITSERVE_CHECK(index >= 0 && index < static_cast<int>(table.size()))
      << "sequence " << seq_id << " has no block " << index;
  const int32_t block = table[index];
  if (hash_[block]) return;
  Pool& p = pools_[PoolOfBlock(block)];
  if (!p.published.emplace(hash, block).second) return;
  hash_[block] = hash;
  ++num_cached_;
}

void KvBlockAllocator::ClearCache() {
  for (Pool& p : pools_) {
    for (int32_t block : p.idle) p.free.push_back(block);
    p.idle.clear();
    p.published.clear();
  }
  for (auto& h : hash_) h.reset();
  num_cached_ = 0;
}

const std::vector<int32_t>& KvBlockAllocator::block_table(uint64_t seq_id) const {
  auto it = tables_.find(seq_id);
  return it == tables_.end() ? EmptyTable() : it->second;
}

}  // namespace bitserve::scheduler
