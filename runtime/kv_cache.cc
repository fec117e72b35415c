#include "runtime/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace bitserve {

ContiguousKvCache::ContiguousKvCache(const ModelConfig& config, int max_slots,
                                     int64_t max_tokens_per_slot)
    : layers_(config.num_hidden_layers),
      row_(config.kv_dim()),
      max_tokens_(max_tokens_per_slot),
      slots_(max_slots) {
  for (Slot& s : slots_) {
    s.keys.resize(layers_);
    s.values.resize(layers_);
  }
}

absl::Status ContiguousKvCache::Reserve(int slot, int64_t tokens) {
  BITSERVE_CHECK(slot >= 0 && slot < max_slots()) << "slot " << slot;
  Slot& s = slots_[slot];
  const int64_t need = s.length + tokens;
  if (need > max_tokens_) {
    return absl::OutOfRangeError(absl::StrCat("sequence would hold ", need,
                                              " tokens; the KV cache holds at most ", max_tokens_,
                                              " per sequence"));
  }
  if (need <= s.capacity) return absl::OkStatus();
  // Geometric growth: appending one token at a time stays amortized O(1).
  const int64_t capacity = std::min(max_tokens_, std::max(need, 2 * s.capacity));
  for (int l = 0; l < layers_; ++l) {
    s.keys[l].resize(capacity * row_);
    s.values[l].resize(capacity * row_);
  }
  s.capacity = capacity;
  return absl::OkStatus();
}

void ContiguousKvCache::Release(int slot) {
  Slot& s = slots_[slot];
  s.length = 0;
  s.capacity = 0;
  for (int l = 0; l < layers_; ++l) {
    std::vector<float>().swap(s.keys[l]);
    std::vector<float>().swap(s.values[l]);
  }
}

float* ContiguousKvCache::KeyRow(int layer, int slot, int64_t position) {
  BITSERVE_CHECK(position < slots_[slot].capacity) << "position " << position;
  return slots_[slot].keys[layer].data() + position * row_;
}

float* ContiguousKvCache::ValueRow(int layer, int slot, int64_t position) {
  BITSERVE_CHECK(position < slots_[slot].capacity) << "position " << position;
  return slots_[slot].values[layer].data() + position * row_;
}

const float* ContiguousKvCache::Keys(int layer, int slot) const {
  return slots_[slot].keys[layer].data();
}

const float* ContiguousKvCache::Values(int layer, int slot) const {
  return slots_[slot].values[layer].data();
}

}  // namespace bitserve
