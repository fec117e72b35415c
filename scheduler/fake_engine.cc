#include "scheduler/fake_engine.h"

#include "gtest/gtest.h"

namespace bitserve::scheduler {

FakeEngine::FakeEngine(int num_blocks, int block_size, int vocab_size)
    : block_size_(block_size),
      vocab_size_(vocab_size),
      slots_(static_cast<size_t>(num_blocks) * block_size, -1) {}

int32_t FakeEngine::NextToken(const std::vector<int32_t>& tokens, int vocab_size) {
  // FNV-1a over the whole sequence, then a final mix so that the low bits depend on every token.
  uint64_t h = 14695981039346656037ull;
  for (int32_t t : tokens) {
    h ^= static_cast<uint32_t>(t);
    h *= 1099511628211ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return static_cast<int32_t>(h % static_cast<uint64_t>(vocab_size));
}

std::vector<int32_t> FakeEngine::SoloOutput(std::vector<int32_t> prompt, int max_new_tokens,
                                            int vocab_size) {
  std::vector<int32_t> out;
  for (int i = 0; i < max_new_tokens; ++i) {
    out.push_back(NextToken(prompt, vocab_size));
    prompt.push_back(out.back());
  }
  return out;
}

std::vector<SampledToken> FakeEngine::Run(const StepPlan& plan) {
  auto slot = [&](const PlanEntry& e, int64_t position) -> int32_t& {
    const int64_t block = e.block_table.at(position / block_size_);
    return slots_.at(block * block_size_ + position % block_size_);
  };
  std::vector<SampledToken> sampled;
  for (const PlanEntry& e : plan.entries) {
    const int64_t end = e.start_position + static_cast<int64_t>(e.token_ids.size());
    for (int64_t p = e.start_position; p < end; ++p) {
      slot(e, p) = e.token_ids[p - e.start_position];
    }
    if (!e.samples) continue;
    std::vector<int32_t> sequence;
    sequence.reserve(end);
    for (int64_t p = 0; p < end; ++p) {
      sequence.push_back(slot(e, p));
      if (sequence.back() < 0) {
        ADD_FAILURE() << "step " << plan.step_id << ": sequence " << e.seq_id << " reads position "
                      << p << ", which no step wrote";
      }
    }
    sampled.push_back({e.seq_id, NextToken(sequence, vocab_size_)});
  }
  return sampled;
}

}  // namespace bitserve::scheduler
