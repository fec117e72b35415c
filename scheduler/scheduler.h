// Iteration-level continuous batching (DESIGN.md "One request, end to end", steps 2-5), in the
// manner of vLLM's V1 scheduler and nano-vllm. Each Schedule() builds one step within a token
// budget, in this order:
//   1. Running sequences, by priority then arrival: every decoding one gets its token (the budget
//      keeps one token for each decode still to come), a sequence in the middle of its prompt
//      gets the next chunk (at most long_prefill_chunk tokens). KV blocks are allocated for exactly
//      the tokens scheduled; when they run out, the newest sequences of the lowest priority are
//      preempted by recompute (blocks freed, sent back to the waiting queue).
//   2. Waiting sequences, in the same order, while a sequence slot, budget and the blocks of
//      their first chunk are free. The head of the queue is never overtaken, so a long prompt is
//      not starved by a stream of short ones; a waiting sequence of higher priority than a
//      running one may preempt it. No admission in a step that had to preempt for memory: the
//      freed blocks are for the sequences already running.
// Prefix caching (config.enable_prefix_caching): a sequence admitted from the waiting queue
// first attaches the longest run of published blocks that start its tokens (all but its last
// token: that one is always computed, for its logits), in the pool with the longest such run, and
// is scheduled from there; every full block a step computes is published when the step returns.
// Expert parallelism: the KV blocks are one pool per rank (kv_block_allocator.h); a sequence is
// admitted into the least loaded pool with room, and only sequences of the same pool are
// preempted for it.
// Sequences in flight (in a step whose results have not come back) are skipped, never preempted
// nor freed, so that pipeline parallelism can keep several steps in flight (one per stage).
//
// Not thread-safe: the coordinator's scheduling loop owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/kv_block_allocator.h"
#include "scheduler/scheduler_config.h"
#include "scheduler/sequence.h"
#include "scheduler/step_plan.h"

namespace bitserve::scheduler {

class Scheduler {
 public:
  // INVALID_ARGUMENT when config.Validate() fails.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerConfig& config);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. INVALID_ARGUMENT: empty prompt, negative token id, max_new_tokens < 1, an id
  // that is still waiting or running. RESOURCE_EXHAUSTED: the request can never fit (prompt +
  // max_new_tokens beyond max_model_len or beyond the whole KV cache), or the queue is full.
  // Once accepted, a request stays until Update finishes it by length, or Finish or Cancel.
  absl::Status Add(Request request);

  // Builds the next step; see the top of this file. The plan's sequences are in flight until the
  // Update that answers it. At most `max_sequences` sequences take part: a pipeline of S stages
  // keeps S steps in flight, each with about 1/S of the sequences (micro-batches), so that every
  // stage has work.
  StepPlan Schedule(int max_sequences = std::numeric_limits<int>::max());

  // The sampled tokens of the oldest plan in flight, one for each of its entries with samples ==
  // true (entries of sequences finished or cancelled meanwhile are accepted and ignored). Appends
  // them and returns the sequences that reached max_new_tokens or max_model_len; those are freed.
  // Stop tokens and strings are the caller's: it calls Finish. FAILED_PRECONDITION when no plan is
  // in flight, INVALID_ARGUMENT when the results do not match the plan; then nothing changes.
  absl::StatusOr<std::vector<FinishedSequence>> Update(const std::vector<SampledToken>& results);

  // Frees a waiting or running sequence now: a stop condition (Finish) or the client went away
  // (Cancel). A sequence in flight stops being scheduled now and gives its blocks back when its
  // step returns. NOT_FOUND for an id that is not waiting or running.
  absl::Status Finish(uint64_t id);
  absl::Status Cancel(uint64_t id);

  // The workers lost every step in flight (a worker died): their sequences are preempted by
  // recompute, so that they run again from their tokens so far. Returns those requeued.
  std::vector<uint64_t> AbortInFlightSteps();

  const SchedulerConfig& config() const { return config_; }
  // nullptr when id is not waiting or running.
  const Sequence* FindSequence(uint64_t id) const;

  // For metrics.
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_steps_in_flight() const { return static_cast<int>(in_flight_.size()); }
  // Waiting, running, and released sequences whose step has not returned yet.
  bool has_unfinished() const { return !sequences_.empty(); }
  int num_kv_blocks_used() const { return kv_blocks_.num_used_blocks(); }
  int num_kv_blocks_free() const { return kv_blocks_.num_free_blocks(); }
  int64_t kv_capacity_tokens() const { return kv_blocks_.capacity_tokens(); }
  int num_tokens_last_step() const { return num_tokens_last_step_; }
  uint64_t num_preemptions() const { return num_preemptions_; }
  // Prefix caching, in tokens as vLLM counts them: tokens of the sequences admitted (looked up),
  // and of those, tokens found in the cache.
  uint64_t prefix_cache_queries() const { return prefix_cache_queries_; }
  uint64_t prefix_cache_hits() const { return prefix_cache_hits_; }
  int num_prefix_cached_blocks() const { return kv_blocks_.num_cached_blocks(); }
  // The workers' KV memory is gone (a worker lost and replaced): no cached block may be reused.
  void ClearPrefixCache() { kv_blocks_.ClearCache(); }
  const KvBlockAllocator& kv_blocks() const { return kv_blocks_; }

 private:
  // The step being built by Schedule.
  struct StepBuilder {
    int budget = 0;
    int max_sequences = 0;
    bool full() const {
      return static_cast<int>(decodes.size() + prefills.size()) >= max_sequences;
    }
    std::vector<PlanEntry> decodes;
    std::vector<PlanEntry> prefills;
    std::vector<uint64_t> preempted;
  };
  struct InFlightEntry {
    uint64_t seq_id;
    bool samples;
  };
  struct InFlightStep {
    uint64_t step_id;
    std::vector<InFlightEntry> entries;
  };

  explicit Scheduler(const SchedulerConfig& config);

  void PreemptForWaitingPriority(StepBuilder& step);
  // Returns whether it had to preempt for memory.
  bool ScheduleRunning(StepBuilder& step);
  void AdmitWaiting(StepBuilder& step);
  void Emit(Sequence& seq, int num_tokens, StepBuilder& step);

  // The newest idle running sequence of the lowest priority, stopping at `above` (exclusive),
  // among those whose blocks are in `pool` (-1: any; freeing another rank's blocks makes no room);
  // nullptr when there is none.
  Sequence* LowestIdleRunning(const Sequence* above, int pool = -1) const;
  bool HasInFlightBelow(const Sequence& seq, int pool = -1) const;
  bool InPool(const Sequence& seq, int pool) const;
  // Publishes the full blocks of seq's computed tokens that are not yet published.
  void PublishComputedBlocks(Sequence& seq);
  // Frees an idle running sequence's blocks and moves it to the waiting queue.
  void Preempt(Sequence& seq);
  absl::Status Release(uint64_t id, const char* what);
  // Frees the blocks of a sequence that is neither queued nor in flight, and forgets it.
  void Forget(uint64_t id);

  SchedulerConfig config_;
  KvBlockAllocator kv_blocks_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  std::map<SequenceKey, Sequence*> waiting_;
  std::map<SequenceKey, Sequence*> running_;
  std::deque<InFlightStep> in_flight_;  // oldest first: Update answers the front
  uint64_t next_arrival_ = 0;
  uint64_t next_step_id_ = 0;
  int num_tokens_last_step_ = 0;
  uint64_t num_preemptions_ = 0;
  uint64_t prefix_cache_queries_ = 0;
  uint64_t prefix_cache_hits_ = 0;
};

}  // namespace bitserve::scheduler
