// Byte-pair merging of one pre-token: start from one token per byte and repeatedly merge the
// adjacent pair of lowest merge rank (the leftmost among equal ranks), as Hugging Face's BPE does.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"

namespace bitserve {

class BpeModel {
 public:
  // `byte_tokens[b]` is the id of the token of the single byte b.
  explicit BpeModel(const std::array<int32_t, 256>& byte_tokens) : byte_tokens_(byte_tokens) {}

  // Registers merge `left right -> result` with priority `rank` (lower merges first). A pair
  // given again is replaced, as in Hugging Face's and the JS reference's maps (the last wins).
  void AddMerge(int32_t left, int32_t right, int32_t rank, int32_t result);

  // Appends the tokens of `bytes` (non-empty) after all possible merges.
  void Encode(absl::string_view bytes, std::vector<int32_t>* out) const;

  // Sizes the merge table for `n` merges; AddMerge beyond that grows it.
  void ReserveMerges(size_t n);

  int32_t ByteToken(unsigned char b) const { return byte_tokens_[b]; }
  size_t num_merges() const { return num_merges_; }

 private:
  // An open-addressing table of merges keyed by the (left, right) id pair, with linear probing.
  // Hand-rolled rather than a flat_hash_map: at 280k merges its random inserts were half of the
  // load time, and one probe of a plain array is as fast to look up.
  struct Merge {
    uint64_t key;  // kEmpty for a free slot
    int32_t rank;
    int32_t result;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are non-negative: never a real key

  static uint64_t Key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  static uint64_t Slot(uint64_t key, uint64_t mask) {
    key ^= key >> 33;  // MurmurHash3's finalizer: ids are small and dense, the slots must not be
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key & mask;
  }
  const Merge* Find(int32_t left, int32_t right) const {
    const uint64_t key = Key(left, right);
    for (uint64_t i = Slot(key, mask_);; i = (i + 1) & mask_) {
      const Merge& m = table_[i];
      if (m.key == key) return &m;
      if (m.key == kEmpty) return nullptr;
    }
  }
  void Grow(size_t capacity);

  std::array<int32_t, 256> byte_tokens_;
  std::vector<Merge> table_ = std::vector<Merge>(16, Merge{kEmpty, 0, 0});  // a power of two
  uint64_t mask_ = 15;
  size_t num_merges_ = 0;
};

}  // namespace bitserve
