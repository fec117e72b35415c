#include "scheduler/sequence.h"

#include <utility>

#include "base/check.h"

namespace bitserve::scheduler {

Sequence::Sequence(Request request, uint64_t arrival)
    : id_(request.id),
      priority_(request.priority),
      arrival_(arrival),
      max_new_tokens_(request.max_new_tokens),
      num_prompt_tokens_(static_cast<int>(request.prompt_tokens.size())),
      tokens_(std::move(request.prompt_tokens)) {
  tokens_.reserve(tokens_.size() + max_new_tokens_);
}

std::vector<int32_t> Sequence::output_tokens() const {
  return std::vector<int32_t>(tokens_.begin() + num_prompt_tokens_, tokens_.end());
}

void Sequence::MarkScheduled(int num_tokens) {
  BITSERVE_CHECK(!in_flight_) << "sequence " << id_ << " scheduled while in flight";
  BITSERVE_CHECK(num_tokens >= 1 && num_tokens <= num_pending_tokens())
      << "sequence " << id_ << ": " << num_tokens << " of " << num_pending_tokens() << " pending";
  num_computed_ += num_tokens;
  in_flight_ = true;
}

void Sequence::MarkStepDone() {
  BITSERVE_CHECK(in_flight_) << "sequence " << id_ << " is not in flight";
  in_flight_ = false;
}

void Sequence::AppendToken(int32_t token) {
  BITSERVE_CHECK(num_pending_tokens() == 0)
      << "sequence " << id_ << " sampled with " << num_pending_tokens() << " tokens pending";
  tokens_.push_back(token);
}

void Sequence::DropCache() {
  BITSERVE_CHECK(!in_flight_) << "sequence " << id_ << " preempted while in flight";
  num_computed_ = 0;
  num_published_blocks_ = 0;
}

void Sequence::SetCachedPrefix(int cached) {
  BITSERVE_CHECK(!in_flight_ && num_computed_ == 0 && cached >= 0 && cached < num_tokens())
      << "sequence " << id_ << ": cached prefix of " << cached << " tokens, " << num_computed_
      << " computed of " << num_tokens();
  num_computed_ = cached;
}

const std::vector<BlockHash>& Sequence::FullBlockHashes(int block_size) {
  const size_t full = tokens_.size() / block_size;
  while (block_hashes_.size() < full) {
    const size_t i = block_hashes_.size();
    const BlockHash parent = i == 0 ? RootBlockHash(block_size) : block_hashes_[i - 1];
    block_hashes_.push_back(ChainBlockHash(
        parent, std::span<const int32_t>(tokens_.data() + i * block_size, block_size)));
  }
  return block_hashes_;
}

}  // namespace bitserve::scheduler
