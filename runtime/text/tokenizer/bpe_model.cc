#include "runtime/text/tokenizer/bpe_model.h"

#include <algorithm>
#include <utility>

namespace bitserve {
namespace {

// The symbols of one word, as a doubly linked list over their first byte positions; a symbol
// merged into its left neighbour is dead (id -1).
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
};

// A possible merge of the adjacent symbols starting at `left` and `right`. It may be stale by
// the time it is popped; that is checked then (cheaper than deleting from the heap).
struct Candidate {
  int32_t rank;
  int32_t left;
  int32_t right;
};

// Min-heap order: lowest rank first, then leftmost (pairs of equal rank are the same pair).
bool Later(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

constexpr size_t kMaxKeptSymbols = 1 << 16;

}  // namespace

void BpeModel::ReserveMerges(size_t n) {
  size_t capacity = 16;
  while (capacity * 3 < n * 4) capacity *= 2;  // load factor at most 3/4 (LLaMA-3: 0.53)
  if (capacity > table_.size()) Grow(capacity);
}

void BpeModel::Grow(size_t capacity) {
  std::vector<Merge> old = std::exchange(table_, std::vector<Merge>(capacity, Merge{kEmpty, 0, 0}));
  mask_ = capacity - 1;
  for (const Merge& m : old) {
    if (m.key == kEmpty) continue;
    uint64_t i = Slot(m.key, mask_);
    while (table_[i].key != kEmpty) i = (i + 1) & mask_;
    table_[i] = m;
  }
}

void BpeModel::AddMerge(int32_t left, int32_t right, int32_t rank, int32_t result) {
  if ((num_merges_ + 1) * 4 > table_.size() * 3) Grow(2 * table_.size());
  const uint64_t key = Key(left, right);
  uint64_t i = Slot(key, mask_);
  while (table_[i].key != kEmpty && table_[i].key != key) i = (i + 1) & mask_;
  if (table_[i].key == kEmpty) ++num_merges_;
  table_[i] = Merge{key, rank, result};
}

void BpeModel::Encode(absl::string_view bytes, std::vector<int32_t>* out) const {
  const auto n = static_cast<int32_t>(bytes.size());
  if (n == 1) {
    out->push_back(byte_tokens_[static_cast<unsigned char>(bytes[0])]);
    return;
  }
  // Scratch reused across calls on this thread: no allocation once warm.
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_tokens_[static_cast<unsigned char>(bytes[i])], i - 1,
                  i + 1 < n ? i + 1 : -1};
  }
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = Find(symbols[i].id, symbols[i + 1].id))
      heap.push_back({m->rank, i, i + 1});
  }
  std::make_heap(heap.begin(), heap.end(), Later);
  auto push = [&](int32_t left, int32_t right) {
    if (const Merge* m = Find(symbols[left].id, symbols[right].id)) {
      heap.push_back({m->rank, left, right});
      std::push_heap(heap.begin(), heap.end(), Later);
    }
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), Later);
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.left];
    // Stale: the left symbol was merged away, or its neighbour changed.
    if (left.id < 0 || left.next != c.right) continue;
    Symbol& right = symbols[c.right];
    const Merge* m = Find(left.id, right.id);
    if (m == nullptr || m->rank != c.rank) continue;
    left.id = m->result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -1;
    if (left.prev >= 0) push(left.prev, c.left);
    if (left.next >= 0) push(c.left, left.next);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
  // A huge pre-token (a megabyte without a space) must not pin its scratch to the thread.
  if (symbols.capacity() > kMaxKeptSymbols) {
    std::vector<Symbol>().swap(symbols);
    std::vector<Candidate>().swap(heap);
  }
}

}  // namespace bitserve
