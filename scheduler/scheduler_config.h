// The limits of the continuous-batching scheduler. Validated once, before a Scheduler is built
// (Scheduler::Create); the scheduler trusts them afterwards.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace bitserve::scheduler {

struct SchedulerConfig {
  // Tokens fed to the model in one step (decode tokens plus prefill chunks). Bounds the latency of
  // a step, and so the time between two tokens of every running sequence, and activation memory.
  int max_num_batched_tokens = 8192;
  // Sequences admitted at once (running, in flight included). Every running sequence gets its
  // decode token in each step, so this may not exceed max_num_batched_tokens.
  int max_num_seqs = 256;
  // Tokens per KV block (DESIGN.md "KV cache").
  int block_size = 16;
  // Blocks of KV memory on the workers. No default: it depends on the device and the model.
  int num_kv_blocks = 0;
  // Pools the blocks are split into, one per rank of an expert-parallel group (each rank runs its
  // own sequences in its own KV memory; kv_block_allocator.h). Must divide num_kv_blocks.
  int num_kv_pools = 1;
  // Positions of one sequence: prompt plus generated tokens.
  int max_model_len = 4096;
  // Waiting requests beyond which Add answers RESOURCE_EXHAUSTED.
  int max_waiting = 256;
  // Prompt tokens of one sequence in one step, so that one long prompt cannot take a whole step and
  // delay the first token of the short prompts behind it.
  int long_prefill_chunk = 2048;
  // Automatic prefix caching (kv_block_allocator.h): full blocks of computed KV are kept and
  // shared by later sequences whose tokens start the same way.
  bool enable_prefix_caching = true;

  int64_t kv_capacity_tokens() const { return int64_t{num_kv_blocks} * block_size; }

  // INVALID_ARGUMENT naming the field and the value when an invariant above does not hold.
  absl::Status Validate() const;
};

}  // namespace bitserve::scheduler
