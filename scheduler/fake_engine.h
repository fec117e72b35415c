// Test support: a deterministic stand-in for the workers. It keeps one token id per KV slot (where
// the workers keep K and V), writes each plan entry's tokens through its block table, and samples
// a hash of the whole sequence read back through the block table. A wrong position, token id or
// block table, or two sequences sharing a block, changes the tokens it samples, so comparing with
// SoloOutput (the same function applied to a request alone) catches it.
#pragma once

#include <cstdint>
#include <vector>

#include "scheduler/step_plan.h"

namespace bitserve::scheduler {

class FakeEngine {
 public:
  FakeEngine(int num_blocks, int block_size, int vocab_size);

  // Runs one step: one sampled token for each entry with samples == true.
  std::vector<SampledToken> Run(const StepPlan& plan);

  // The fake model: the next token as a function of every token so far.
  static int32_t NextToken(const std::vector<int32_t>& tokens, int vocab_size);
  // What a request generates when nothing else runs and memory is ample.
  static std::vector<int32_t> SoloOutput(std::vector<int32_t> prompt, int max_new_tokens,
                                         int vocab_size);

 private:
  int block_size_;
  int vocab_size_;
  std::vector<int32_t> slots_;  // [num_blocks * block_size]; -1: never written
};

}  // namespace bitserve::scheduler
