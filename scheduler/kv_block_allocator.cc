#include "scheduler/kv_block_allocator.h"

#include "base/check.h"

namespace bitserve::scheduler {
namespace {

const std::vector<int32_t>& EmptyTable() {
  static const auto* const kEmpty = new std::vector<int32_t>();
  return *kEmpty;
}

}  // namespace

KvBlockAllocator::KvBlockAllocator(int num_blocks, int block_size)
    : block_size_(block_size), owned_(num_blocks, false) {
  BITSERVE_CHECK(num_blocks >= 1 && block_size >= 1)
      << "num_blocks=" << num_blocks << " block_size=" << block_size;
  free_.reserve(num_blocks);
  // Reversed so that a fresh pool hands out blocks 0, 1, 2, ...
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int64_t KvBlockAllocator::NewBlocksNeeded(uint64_t seq_id, int64_t num_tokens) const {
  const int64_t held = static_cast<int64_t>(block_table(seq_id).size());
  const int64_t needed = BlocksForTokens(num_tokens);
  return needed > held ? needed - held : 0;
}

bool KvBlockAllocator::TryGrow(uint64_t seq_id, int64_t num_tokens) {
  const int64_t more = NewBlocksNeeded(seq_id, num_tokens);
  if (more == 0) return true;
  if (more > num_free_blocks()) return false;
  std::vector<int32_t>& table = tables_[seq_id];
  for (int64_t i = 0; i < more; ++i) {
    const int32_t block = free_.back();
    free_.pop_back();
    BITSERVE_CHECK(!owned_[block]) << "block " << block << " handed out twice";
    owned_[block] = true;
    table.push_back(block);
  }
  return true;
}

void KvBlockAllocator::Free(uint64_t seq_id) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return;
  // Pushed in reverse so that the sequence's first block is the next one handed out.
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) {
    BITSERVE_CHECK(owned_[*b]) << "block " << *b << " freed twice (sequence " << seq_id << ")";
    owned_[*b] = false;
    free_.push_back(*b);
  }
  tables_.erase(it);
}

const std::vector<int32_t>& KvBlockAllocator::block_table(uint64_t seq_id) const {
  auto it = tables_.find(seq_id);
  return it == tables_.end() ? EmptyTable() : it->second;
}

}  // namespace bitserve::scheduler
