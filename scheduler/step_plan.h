// What one scheduler step hands to the workers, and what comes back. The workers keep no
// scheduling state (DESIGN.md "Processes"), so an entry carries everything a worker needs for its
// sequence: the tokens, their positions and the whole block table.
#pragma once

#include <cstdint>
#include <vector>

namespace bitserve::scheduler {

struct PlanEntry {
  uint64_t seq_id = 0;
  // Position of token_ids[0]. The KV cache holds positions [0, start_position) already; the step
  // writes K/V for [start_position, start_position + token_ids.size()).
  int32_t start_position = 0;
  // A prefill chunk (a slice of the prompt, or of prompt + generated tokens when recomputing a
  // preempted sequence), or for a decode the last generated token.
  std::vector<int32_t> token_ids;
  // The logits of the last token are sampled: the last prefill chunk, or a decode. Other chunks
  // only fill the cache.
  bool samples = false;
  // Covers exactly start_position + token_ids.size() tokens; kv_block_allocator.h draws it.
  std::vector<int32_t> block_table;
};

// One micro-batch. With pipeline stages several plans are in flight at once; a sequence is in at
// most one of them, and each plan is answered by one Scheduler::Update, in the order the plans
// were made.
struct StepPlan {
  uint64_t step_id = 0;
  // Decodes (one token at start_position > 0) first, then prefill chunks, so that a worker splits
  // the batch between its decode and prefill attention paths at num_decode_entries.
  std::vector<PlanEntry> entries;
  int num_decode_entries = 0;
  int num_tokens = 0;  // sum of token_ids sizes, <= max_num_batched_tokens
  // Sequences sent back to the waiting queue by this step (their blocks are free again): for
  // metrics and logs; workers need nothing, their blocks are simply overwritten later.
  std::vector<uint64_t> preempted;

  // An empty plan is not sent and needs no Update: nothing could be scheduled until a step in
  // flight returns or a request arrives.
  bool empty() const { return entries.empty(); }
};

// The token sampled for one entry with samples == true.
struct SampledToken {
  uint64_t seq_id = 0;
  int32_t token = 0;
};

// A sequence that Update finished by length (max_new_tokens, or max_model_len positions). Its
// blocks are free and the scheduler has forgotten it.
struct FinishedSequence {
  uint64_t id = 0;
  int num_prompt_tokens = 0;
  std::vector<int32_t> output_tokens;
};

}  // namespace bitserve::scheduler
