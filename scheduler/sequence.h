// A request as the scheduler sees it, and the sequence it becomes: its tokens so far and how much
// of them the KV cache holds.
#pragma once

#include <cstdint>
#include <vector>

#include "scheduler/block_hash.h"

namespace bitserve::scheduler {

struct Request {
  uint64_t id = 0;  // unique among the scheduler's unfinished sequences
  std::vector<int32_t> prompt_tokens;
  int max_new_tokens = 0;
  // Higher runs first; within one priority, requests run in the order they were added (FCFS).
  int priority = 0;
};

enum class SequenceState {
  kWaiting,   // queued: never admitted, or preempted (its KV cache dropped, to be recomputed)
  kRunning,   // admitted: holds KV blocks and is scheduled every step until it finishes
  kReleased,  // finished or cancelled while in flight: its blocks are freed when its step returns
};

// Token bookkeeping of one sequence:
//
//   tokens_:  p0 p1 ... p(P-1) g0 g1 ... g(G-1)      (P prompt tokens, G generated)
//             |<- num_computed_ ->|<- pending ->|
//
// The KV cache holds tokens [0, num_computed_) (or will, once the step in flight returns). The
// model still has to be fed the pending tokens; the last one's logits give the next token. A fresh
// prompt has all P pending; a decoding sequence has exactly one (its last generated token); a
// preempted sequence drops its cache and has all P + G pending again, so recomputing it continues
// with g(G), and tokens already generated are neither lost nor sampled twice.
class Sequence {
 public:
  // arrival orders requests within a priority (first come, first served).
  Sequence(Request request, uint64_t arrival);

  uint64_t id() const { return id_; }
  int priority() const { return priority_; }
  uint64_t arrival() const { return arrival_; }
  int max_new_tokens() const { return max_new_tokens_; }
  SequenceState state() const { return state_; }
  // Scheduled in a step whose results have not arrived: it may not be scheduled, preempted or
  // freed until they do.
  bool in_flight() const { return in_flight_; }

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int num_tokens() const { return static_cast<int>(tokens_.size()); }
  int num_prompt_tokens() const { return num_prompt_tokens_; }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }
  std::vector<int32_t> output_tokens() const;
  int num_computed_tokens() const { return num_computed_; }
  int num_pending_tokens() const { return num_tokens() - num_computed_; }

  void set_state(SequenceState state) { state_ = state; }
  // The next num_tokens pending tokens go into a step: they count as computed from now on.
  void MarkScheduled(int num_tokens);
  // The step holding this sequence returned (with or without a token for it).
  void MarkStepDone();
  void AppendToken(int32_t token);
  // Preemption by recompute: the KV cache is gone, every token is pending again.
  void DropCache();
  // Prefix caching: a sequence holding no KV starts with its first `cached` tokens already in the
  // cache (blocks computed for an earlier sequence with the same tokens); cached < num_tokens().
  void SetCachedPrefix(int cached);

  // The content address of every full block of tokens() so far (block_hash.h), computed once.
  const std::vector<BlockHash>& FullBlockHashes(int block_size);
  // Blocks of this sequence published to the prefix cache (the scheduler's count; 0 after
  // DropCache).
  int num_published_blocks() const { return num_published_blocks_; }
  void set_num_published_blocks(int n) { num_published_blocks_ = n; }

 private:
  uint64_t id_;
  int priority_;
  uint64_t arrival_;
  int max_new_tokens_;
  int num_prompt_tokens_;
  std::vector<int32_t> tokens_;
  int num_computed_ = 0;
  std::vector<BlockHash> block_hashes_;
  int num_published_blocks_ = 0;
  bool in_flight_ = false;
  SequenceState state_ = SequenceState::kWaiting;
};

// The order of both queues: higher priority first, then earlier arrival. Preemption takes victims
// from the other end (the newest of the lowest priority), so a preempted sequence, which keeps its
// arrival, goes back to the front of its priority among the waiting.
struct SequenceKey {
  int priority;
  uint64_t arrival;  // unique, so keys are unique

  friend bool operator<(const SequenceKey& a, const SequenceKey& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.arrival < b.arrival;
  }
};

inline SequenceKey KeyOf(const Sequence& seq) { return {seq.priority(), seq.arrival()}; }

}  // namespace bitserve::scheduler
