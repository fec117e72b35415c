// Key/value memory of the CPU engine, paged as engine.h describes: num_blocks blocks of block_size
// positions. A block holds, for every layer, its keys then its values:
//
//   block b: [layer][k|v][row 0 .. block_size)[kv_heads * head_dim]   float32
//
// so one sequence's position p, layer l lives at Block(table[p / block_size]) + offsets of l and
// row p % block_size. Blocks are allocated on first write (a CPU process should not commit the
// memory of a whole cache it may never fill) and kept for reuse.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/model_config.h"

namespace bitserve {

class PagedKvCache {
 public:
  PagedKvCache(const ModelConfig& config, int num_blocks, int block_size);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int block_size() const { return block_size_; }
  int64_t row_floats() const { return row_; }
  int64_t allocated_blocks() const;

  // Rows of one position; block ids must be valid (ValidateBatch checks them first).
  float* KeyRow(int layer, std::span<const int32_t> block_table, int64_t position);
  float* ValueRow(int layer, std::span<const int32_t> block_table, int64_t position);

  // Copies positions [0, count) of one layer into contiguous [count, row] rows.
  void Gather(int layer, std::span<const int32_t> block_table, int64_t count, float* keys,
              float* values) const;

 private:
  float* Row(int layer, int kv, std::span<const int32_t> block_table, int64_t position);

  int layers_;
  int block_size_;
  int64_t row_;
  int64_t block_floats_;
  std::vector<std::unique_ptr<float[]>> blocks_;
};

}  // namespace bitserve
