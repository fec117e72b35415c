#include "scheduler/block_hash.h"

namespace bitserve::scheduler {
namespace {

// splitmix64's finalizer: a bijection with full avalanche.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

BlockHash ChainBlockHash(const BlockHash& parent, std::span<const int32_t> tokens) {
  // Two independent 64-bit lanes (different seeds and multipliers), each absorbing the parent,
  // the length and every token.
  uint64_t a = Mix(parent.hi ^ 0x9e3779b97f4a7c15ull) ^ parent.lo;
  uint64_t b = Mix(parent.lo ^ 0xc2b2ae3d27d4eb4full) ^ (parent.hi * 0x165667b19e3779f9ull);
  a = Mix(a ^ tokens.size());
  b = Mix(b + tokens.size() * 0x27d4eb2f165667c5ull);
  for (int32_t t : tokens) {
    const uint64_t v = static_cast<uint32_t>(t);
    a = Mix(a ^ (v + 0x9e3779b97f4a7c15ull));
    b = Mix((b + v) * 0xff51afd7ed558ccdull);
  }
  return {a, b};
}

BlockHash RootBlockHash(int block_size) {
  return {Mix(0x6269747365727665ull ^ static_cast<uint64_t>(block_size)),   // "bitserve"
          Mix(0x7072656669780000ull + static_cast<uint64_t>(block_size))};  // "prefix"
}

}  // namespace bitserve::scheduler
