#include "runtime/engine/paged_kv_cache.h"

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "kernels/cpu/kv_quant.h"

namespace bitserve {

PagedKvCache::PagedKvCache(const ModelConfig& config, int num_blocks, int block_size, KvDtype dtype,
                           int first_layer, int num_layers)
    : first_layer_(first_layer),
      layers_(num_layers < 0 ? config.num_hidden_layers - first_layer : num_layers),
      block_size_(block_size),
      dtype_(dtype),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      row_(config.kv_dim()),
      row_bytes_(kv_heads_ * KvHeadBytes(dtype, head_dim_)),
      row_params_(kv_heads_ * KvParamHalves(dtype)),
      params_bytes_(int64_t{layers_} * 2 * block_size * row_params_ * 2),
      block_bytes_(params_bytes_ + int64_t{layers_} * 2 * block_size * row_bytes_),
      blocks_(num_blocks) {
  BITSERVE_CHECK(num_blocks > 0 && block_size > 0) << num_blocks << " blocks of " << block_size;
  BITSERVE_CHECK(dtype != KvDtype::kInt4 || head_dim_ % 2 == 0) << "int4 needs an even head_dim";
}

int64_t PagedKvCache::allocated_blocks() const {
  return std::count_if(blocks_.begin(), blocks_.end(), [](const auto& b) { return b != nullptr; });
}

int64_t PagedKvCache::DataOffset(int layer, int kv, int row) const {
  BITSERVE_CHECK(layer >= first_layer_ && layer < first_layer_ + layers_) << "layer " << layer;
  return params_bytes_ +
         ((int64_t{layer - first_layer_} * 2 + kv) * block_size_ + row) * row_bytes_;
}

int64_t PagedKvCache::ParamsOffset(int layer, int kv, int row) const {
  return ((int64_t{layer - first_layer_} * 2 + kv) * block_size_ + row) * row_params_;
}

uint8_t* PagedKvCache::Block(int32_t id) {
  std::unique_ptr<uint8_t[]>& block = blocks_[id];
  if (block == nullptr) block = std::make_unique<uint8_t[]>(block_bytes_);  // zeroed
  return block.get();
}

void PagedKvCache::Write(int layer, std::span<const int32_t> block_table, int64_t position,
                         const float* keys, const float* values) {
  uint8_t* block = Block(block_table[position / block_size_]);
  const int row = static_cast<int>(position % block_size_);
  uint16_t* params = reinterpret_cast<uint16_t*>(block);
  for (int kv = 0; kv < 2; ++kv) {
    cpu::QuantizeKvRow(dtype_, kv == 0 ? keys : values, kv_heads_, head_dim_,
                       block + DataOffset(layer, kv, row), params + ParamsOffset(layer, kv, row));
  }
}

void PagedKvCache::Gather(int layer, std::span<const int32_t> block_table, int64_t count,
                          float* keys, float* values) const {
  for (int64_t p = 0; p < count; p += block_size_) {
    const int rows = static_cast<int>(std::min<int64_t>(block_size_, count - p));
    const uint8_t* block = blocks_[block_table[p / block_size_]].get();
    BITSERVE_CHECK(block != nullptr)
        << "reading block " << block_table[p / block_size_] << " that was never written";
    const uint16_t* params = reinterpret_cast<const uint16_t*>(block);
    for (int kv = 0; kv < 2; ++kv) {
      float* out = (kv == 0 ? keys : values) + p * row_;
      if (dtype_ == KvDtype::kF32) {  // the reference: a plain copy of the rows
        std::memcpy(out, block + DataOffset(layer, kv, 0), rows * row_ * sizeof(float));
        continue;
      }
      for (int r = 0; r < rows; ++r) {
        cpu::DequantizeKvRow(dtype_, block + DataOffset(layer, kv, r),
                             params + ParamsOffset(layer, kv, r), kv_heads_, head_dim_,
                             out + r * row_);
      }
    }
  }
}

const uint8_t* PagedKvCache::RowData(int layer, int kv, int32_t block, int row) const {
  const uint8_t* b = blocks_[block].get();
  return b == nullptr ? nullptr : b + DataOffset(layer, kv, row);
}

const uint16_t* PagedKvCache::RowParams(int layer, int kv, int32_t block, int row) const {
  const uint8_t* b = blocks_[block].get();
  return b == nullptr ? nullptr
                      : reinterpret_cast<const uint16_t*>(b) + ParamsOffset(layer, kv, row);
}

}  // namespace bitserve
