// The serving metrics of DESIGN.md/issue 5: what the coordinator reports about requests, steps and
// its state, exported as Prometheus text (rpc/metrics.h) under the `bitserve_` prefix. Every
// method is thread-safe and cheap (atomics or one short uncontended lock), so the scheduling
// thread may call them on every token.
//
// Token accounting: bitserve_prompt_tokens_total and bitserve_generation_tokens_total count the
// usage of finished requests (exactly the usage clients see, recomputed tokens after a preemption
// not counted twice); the throughput gauge counts generated tokens as they come (one per
// FirstToken/InterTokenLatency call) so it is live for long requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "absl/strings/string_view.h"
#include "rpc/metrics.h"

namespace bitserve::rpc {

// Events per second over a sliding window of whole seconds (the current, partial second included),
// for the throughput gauge.
class RateWindow {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateWindow(int window_seconds = 10, Clock::time_point start = Clock::now());
  void Add(int64_t events, Clock::time_point now = Clock::now());
  // Events in the last `window_seconds` divided by the time they cover (less while the window is
  // younger than that).
  double Rate(Clock::time_point now = Clock::now()) const;

 private:
  static constexpr int kSlots = 64;  // > any window we use; slots are reused modulo kSlots
  struct Slot {
    int64_t second = -1;
    int64_t events = 0;
  };
  const int window_seconds_;
  const Clock::time_point start_;
  mutable std::mutex mu_;
  Slot slots_[kSlots];
};

class ServingMetrics {
 public:
  ServingMetrics();

  // outcome: finish reason ("eos", "stop", "length", "cancelled", "error") or
  // "deadline_exceeded"; code: the gRPC code name ("UNAVAILABLE", ...) for "error", "OK" (or
  // empty, rendered as "OK") otherwise.
  void RequestFinished(absl::string_view outcome, absl::string_view code, double e2e_seconds,
                       int prompt_tokens, int completion_tokens);
  // A request refused by Submit: counted with outcome "rejected" and its code.
  void RequestRejected(absl::string_view code);
  void FirstToken(double ttft_seconds);
  // One observation per generated token after the first.
  void InterTokenLatency(double seconds);
  void StepDone(int num_tokens, int num_seqs, double seconds, int num_preempted);
  // Pipelines of workers: the time one stage computed one step and spent in its transport
  // (receiving the previous stage's hidden states, sending its own: NCCL or TCP, waits for a
  // peer included), as its StepResult says, and the steps handed to the workers and not yet
  // answered. Per stage, compute over wall time is its utilization; 1 minus the mean
  // utilization is the pipeline bubble (docs/perf.md).
  void StageStepDone(int stage, double compute_seconds, double transfer_seconds);
  void SetStepsInFlight(int steps);
  // Expert parallelism: `tokens` rows of MoE layer `layer` ran through routed expert `expert` on
  // expert-parallel rank `rank` in one step.
  void ExpertTokens(int layer, int expert, int rank, int64_t tokens);
  // Expert parallelism: the time rank `rank` of stage `stage` spent in its expert exchange in one
  // step (counts, dispatch and combine of every MoE layer, waits for the other ranks included).
  void ExpertExchangeDone(int stage, int rank, double seconds);
  // Expert parallelism: `tokens` tokens of one step ran on rank `rank` (its sequences).
  void RankTokens(int rank, int64_t tokens);
  void SetState(int waiting, int running, int kv_blocks_used, int kv_blocks_free,
                int64_t kv_capacity_tokens, bool ready);
  // Prefix caching: the scheduler's totals so far (tokens of admitted sequences looked up, and of
  // those found cached; the counters follow them) and the blocks published now.
  void SetPrefixCache(uint64_t queries_total, uint64_t hits_total, int cached_blocks);

  std::string RenderPrometheus() const;

  // For tests and for other components that want to add their own metrics to the same endpoint.
  MetricsRegistry& registry() { return registry_; }

 private:
  MetricsRegistry registry_;
  CounterFamily& requests_;
  Counter& prompt_tokens_;
  Counter& generation_tokens_;
  Counter& preemptions_;
  Gauge& queue_depth_;
  Gauge& running_;
  Gauge& kv_blocks_used_;
  Gauge& kv_blocks_free_;
  Gauge& kv_capacity_tokens_;
  Counter& prefix_cache_queries_;
  Counter& prefix_cache_hits_;
  Gauge& prefix_cache_blocks_;
  Gauge& ready_;
  Gauge& throughput_;
  Histogram& ttft_;
  Histogram& tpot_;
  Histogram& e2e_;
  Histogram& request_prompt_tokens_;
  Histogram& request_generation_tokens_;
  Histogram& step_tokens_;
  Histogram& step_sequences_;
  Histogram& step_duration_;
  HistogramFamily& stage_compute_;
  HistogramFamily& stage_transfer_;
  CounterFamily& expert_tokens_;
  CounterFamily& expert_rank_tokens_;
  HistogramFamily& expert_exchange_;
  CounterFamily& rank_tokens_;
  Gauge& steps_in_flight_;
  RateWindow generated_rate_;
};

}  // namespace bitserve::rpc
