// Key/value memory of the CPU engine, paged as engine.h describes: num_blocks blocks of block_size
// positions, each position's keys and values stored in the cache's element type (f32, the
// reference, or bf16/int8/int4 quantized as kernels/kv_cache_format.h defines: quantized on write,
// dequantized on read, the same bytes the CUDA engine stores). A block holds, for every layer:
//
//   block b: params [layer][k|v][row 0 .. block_size)[kv_heads][KvParamHalves(dtype)]  uint16
//            data   [layer][k|v][row 0 .. block_size)[kv_heads][KvHeadBytes(dtype, head_dim)]
//
// (params first: they need 2-byte alignment, the data rows may have odd lengths). One sequence's
// position p, layer l lives in block table[p / block_size], row p % block_size. Blocks are
// allocated on first write (a CPU process should not commit the memory of a whole cache it may
// never fill) and kept for reuse; a fresh block is zeroed, so a never-written row reads as zeros.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/kv_cache_format.h"
#include "runtime/checkpoint/model_config.h"

namespace bitserve {

class PagedKvCache {
 public:
  // Layers [first_layer, first_layer + num_layers) (a pipeline stage's; num_layers -1: to the
  // model's last); the layer arguments below are the model's layer numbers.
  PagedKvCache(const ModelConfig& config, int num_blocks, int block_size,
               KvDtype dtype = KvDtype::kF32, int first_layer = 0, int num_layers = -1);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int block_size() const { return block_size_; }
  KvDtype dtype() const { return dtype_; }
  int64_t row_floats() const { return row_; }
  // Bytes one position takes in every layer, keys and values, data and params.
  int64_t bytes_per_position() const { return 2 * layers_ * (row_bytes_ + 2 * row_params_); }
  int64_t allocated_blocks() const;

  // Stores one position's keys and values (row_floats() floats each) of `layer`; block ids must be
  // valid (ValidateBatch checks them first).
  void Write(int layer, std::span<const int32_t> block_table, int64_t position, const float* keys,
             const float* values);

  // Positions [0, count) of one layer as contiguous float rows [count, row_floats()].
  void Gather(int layer, std::span<const int32_t> block_table, int64_t count, float* keys,
              float* values) const;

  // The stored bytes of one row (kv: 0 keys, 1 values), for tests; null if the block was never
  // written.
  const uint8_t* RowData(int layer, int kv, int32_t block, int row) const;
  const uint16_t* RowParams(int layer, int kv, int32_t block, int row) const;

 private:
  uint8_t* Block(int32_t id);
  int64_t DataOffset(int layer, int kv, int row) const;
  int64_t ParamsOffset(int layer, int kv, int row) const;  // in uint16

  int first_layer_;
  int layers_;
  int block_size_;
  KvDtype dtype_;
  int64_t kv_heads_, head_dim_;
  int64_t row_;         // floats of one row (kv_heads * head_dim)
  int64_t row_bytes_;   // stored data bytes of one row
  int64_t row_params_;  // uint16 params of one row
  int64_t params_bytes_, block_bytes_;
  std::vector<std::unique_ptr<uint8_t[]>> blocks_;
};

}  // namespace bitserve
