// Key/value memory of the CPU engine. Each sequence lives in a slot; a slot keeps, per layer, its
// keys and values contiguously as [tokens, kv_heads * head_dim] float32 rows.
//
// The engine only talks to the cache through AppendRows/Keys/Values and the slot bookkeeping, so
// that the paged, quantized cache (fixed-size blocks, block tables owned by the scheduler) can
// replace this one behind the same calls.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model_config.h"

namespace bitserve {

class ContiguousKvCache {
 public:
  ContiguousKvCache(const ModelConfig& config, int max_slots, int64_t max_tokens_per_slot);

  int max_slots() const { return static_cast<int>(slots_.size()); }
  int64_t max_tokens_per_slot() const { return max_tokens_; }
  int64_t row_floats() const { return row_; }

  // Tokens cached for the slot (the position of its next token).
  int64_t length(int slot) const { return slots_[slot].length; }

  // Makes room for `tokens` more tokens in the slot; OutOfRange past max_tokens_per_slot.
  absl::Status Reserve(int slot, int64_t tokens);
  // Commits `tokens` rows written through Key/ValueRow after Reserve.
  void Advance(int slot, int64_t tokens) { slots_[slot].length += tokens; }
  // Forgets the slot's tokens and frees its memory.
  void Release(int slot);

  float* KeyRow(int layer, int slot, int64_t position);
  float* ValueRow(int layer, int slot, int64_t position);
  const float* Keys(int layer, int slot) const;
  const float* Values(int layer, int slot) const;

 private:
  struct Slot {
    int64_t length = 0;
    int64_t capacity = 0;
    std::vector<std::vector<float>> keys, values;  // per layer, [capacity, row]
  };
  int layers_;
  int64_t row_;
  int64_t max_tokens_;
  std::vector<Slot> slots_;
};

}  // namespace bitserve
