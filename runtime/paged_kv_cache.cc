#include "runtime/paged_kv_cache.h"

#include <algorithm>

#include "kernels/check.h"

namespace bitserve {

PagedKvCache::PagedKvCache(const ModelConfig& config, int num_blocks, int block_size)
    : layers_(config.num_hidden_layers),
      block_size_(block_size),
      row_(config.kv_dim()),
      block_floats_(int64_t{layers_} * 2 * block_size * row_),
      blocks_(num_blocks) {
  BITSERVE_CHECK(num_blocks > 0 && block_size > 0) << num_blocks << " blocks of " << block_size;
}

int64_t PagedKvCache::allocated_blocks() const {
  return std::count_if(blocks_.begin(), blocks_.end(), [](const auto& b) { return b != nullptr; });
}

float* PagedKvCache::Row(int layer, int kv, std::span<const int32_t> block_table, int64_t position) {
  const int32_t id = block_table[position / block_size_];
  std::unique_ptr<float[]>& block = blocks_[id];
  // Fresh blocks start zeroed so that a read of a never-written row is deterministic.
  if (block == nullptr) block = std::make_unique<float[]>(block_floats_);
  return block.get() + ((int64_t{layer} * 2 + kv) * block_size_ + position % block_size_) * row_;
}

float* PagedKvCache::KeyRow(int layer, std::span<const int32_t> block_table, int64_t position) {
  return Row(layer, 0, block_table, position);
}

float* PagedKvCache::ValueRow(int layer, std::span<const int32_t> block_table, int64_t position) {
  return Row(layer, 1, block_table, position);
}

void PagedKvCache::Gather(int layer, std::span<const int32_t> block_table, int64_t count,
                          float* keys, float* values) const {
  for (int64_t p = 0; p < count; p += block_size_) {
    const int64_t rows = std::min<int64_t>(block_size_, count - p);
    const float* block = blocks_[block_table[p / block_size_]].get();
    BITSERVE_CHECK(block != nullptr) << "reading block " << block_table[p / block_size_]
                                     << " that was never written";
    const float* k = block + (int64_t{layer} * 2 + 0) * block_size_ * row_;
    const float* v = block + (int64_t{layer} * 2 + 1) * block_size_ * row_;
    std::copy_n(k, rows * row_, keys + p * row_);
    std::copy_n(v, rows * row_, values + p * row_);
  }
}

}  // namespace bitserve
