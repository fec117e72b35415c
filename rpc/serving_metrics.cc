#include "rpc/serving_metrics.h"

#include <algorithm>

namespace bitserve::rpc {
namespace {

// Latency buckets after vLLM's, extended upward because the CPU engine is slow: a bucket layout
// that tops out at 10 s would put a CPU server's whole distribution into +Inf.
std::vector<double> TtftBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,  0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0};
}
std::vector<double> TpotBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,
          0.4,   0.5,    0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
}
std::vector<double> E2eBuckets() {
  return {0.1,  0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,
          20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}
std::vector<double> StepDurationBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,   0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};
}
// 1, 2, 4, ..., 2^17 tokens: covers one decode token up to a 128K-token prompt.
std::vector<double> TokenCountBuckets() { return ExponentialBuckets(1, 2, 18); }
// 1, 2, 4, ..., 1024 sequences in a step.
std::vector<double> SequenceCountBuckets() { return ExponentialBuckets(1, 2, 11); }

}  // namespace

RateWindow::RateWindow(int window_seconds, Clock::time_point start)
    : window_seconds_(std::clamp(window_seconds, 1, kSlots - 1)), start_(start) {}

void RateWindow::Add(int64_t events, Clock::time_point now) {
  const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(now - start_).count();
  if (second < 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  Slot& slot = slots_[second % kSlots];
  if (slot.second != second) slot = Slot{second, 0};
  slot.events += events;
}

double RateWindow::Rate(Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  if (elapsed <= 0) return 0;
  const int64_t second = static_cast<int64_t>(elapsed);
  // Whole seconds [second - window + 1, second - 1] plus the partial current one.
  const int64_t first = second - window_seconds_ + 1;
  // At least one second: a window a few milliseconds old would turn a handful of tokens into a
  // huge rate.
  const double span = std::max(1.0, std::min(elapsed, (window_seconds_ - 1) + (elapsed - second)));
  int64_t events = 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (const Slot& slot : slots_) {
    if (slot.second >= first && slot.second <= second) events += slot.events;
  }
  return events / span;
}

ServingMetrics::ServingMetrics()
    : requests_(registry_.AddCounter("bitserve_requests_total",
                                     "Requests by outcome: the finish reason (eos, stop, length, "
                                     "cancelled, error), deadline_exceeded (the call's deadline "
                                     "passed), or rejected (refused before queueing, malformed "
                                     "requests included), and the gRPC status code.",
                                     {"outcome", "code"})),
      prompt_tokens_(
          registry_
              .AddCounter("bitserve_prompt_tokens_total", "Prompt tokens of finished requests.")
              .Get()),
      generation_tokens_(registry_
                             .AddCounter("bitserve_generation_tokens_total",
                                         "Generated tokens of finished requests.")
                             .Get()),
      preemptions_(registry_
                       .AddCounter("bitserve_preemptions_total",
                                   "Sequences preempted (to be recomputed) for KV memory.")
                       .Get()),
      queue_depth_(
          registry_.AddGauge("bitserve_queue_depth", "Requests waiting to be scheduled.").Get()),
      running_(registry_
                   .AddGauge("bitserve_running_sequences",
                             "Sequences being generated (admitted to the batch).")
                   .Get()),
      kv_blocks_used_(
          registry_.AddGauge("bitserve_kv_blocks_used", "KV cache blocks in use.").Get()),
      kv_blocks_free_(registry_.AddGauge("bitserve_kv_blocks_free", "KV cache blocks free.").Get()),
      kv_capacity_tokens_(
          registry_
              .AddGauge("bitserve_kv_capacity_tokens", "Token positions the KV cache holds in all.")
              .Get()),
      prefix_cache_queries_(
          registry_
              .AddCounter("bitserve_prefix_cache_queries_total",
                          "Prompt tokens looked up in the prefix cache (sequences admitted).")
              .Get()),
      prefix_cache_hits_(
          registry_
              .AddCounter("bitserve_prefix_cache_hits_total",
                          "Of the tokens looked up, those found in the prefix cache.")
              .Get()),
      prefix_cache_blocks_(registry_
                               .AddGauge("bitserve_prefix_cache_blocks",
                                         "KV blocks published in the prefix cache (held or idle).")
                               .Get()),
      ready_(registry_
                 .AddGauge("bitserve_ready",
                           "1 when the server accepts requests, 0 while starting, "
                           "draining or without workers.")
                 .Get()),
      throughput_(registry_
                      .AddGauge("bitserve_generation_tokens_per_second",
                                "Generated tokens per second over the last 10 seconds.")
                      .Get()),
      ttft_(registry_
                .AddHistogram("bitserve_time_to_first_token_seconds",
                              "Time from arrival to the first generated token.", TtftBuckets())
                .Get()),
      tpot_(registry_
                .AddHistogram("bitserve_time_per_output_token_seconds",
                              "Time between two generated tokens of a request.", TpotBuckets())
                .Get()),
      e2e_(registry_
               .AddHistogram("bitserve_e2e_request_latency_seconds",
                             "Time from arrival to the final message of a request.", E2eBuckets())
               .Get()),
      request_prompt_tokens_(registry_
                                 .AddHistogram("bitserve_request_prompt_tokens",
                                               "Prompt tokens per finished request.",
                                               TokenCountBuckets())
                                 .Get()),
      request_generation_tokens_(registry_
                                     .AddHistogram("bitserve_request_generation_tokens",
                                                   "Generated tokens per finished request.",
                                                   TokenCountBuckets())
                                     .Get()),
      step_tokens_(registry_
                       .AddHistogram("bitserve_step_tokens",
                                     "Tokens fed to the model in one scheduler step "
                                     "(decode tokens plus prefill chunks).",
                                     TokenCountBuckets())
                       .Get()),
      step_sequences_(registry_
                          .AddHistogram("bitserve_step_sequences",
                                        "Sequences in one scheduler step.", SequenceCountBuckets())
                          .Get()),
      step_duration_(registry_
                         .AddHistogram("bitserve_step_duration_seconds",
                                       "Wall time of one scheduler step.", StepDurationBuckets())
                         .Get()),
      stage_compute_(registry_.AddHistogram(
          "bitserve_pipeline_stage_compute_seconds",
          "Time one worker (pipeline stage) computed one step, as it reports; against "
          "bitserve_step_duration_seconds it shows which stage bounds the pipeline.",
          StepDurationBuckets(), {"stage"})),
      stage_transfer_(registry_.AddHistogram(
          "bitserve_pipeline_stage_transfer_seconds",
          "Time one worker (pipeline stage) spent in its transport for one step: receiving the "
          "previous stage's hidden states and sending its own (NCCL or TCP), waits included.",
          StepDurationBuckets(), {"stage"})),
      expert_tokens_(registry_.AddCounter(
          "bitserve_expert_tokens_total",
          "Tokens each routed expert ran, per MoE layer (one per token that chose it), as the "
          "expert-parallel workers report: the load that expert placement balances.",
          {"layer", "expert"})),
      expert_rank_tokens_(registry_.AddCounter(
          "bitserve_expert_rank_tokens_total",
          "Tokens the experts of one expert-parallel rank ran, per MoE layer (its share of "
          "bitserve_expert_tokens_total): imbalance between ranks is time the others wait.",
          {"layer", "rank"})),
      expert_exchange_(registry_.AddHistogram(
          "bitserve_expert_exchange_seconds",
          "Time one expert-parallel rank spent in its expert exchange for one step (the counts, "
          "the dispatched rows and the results of every MoE layer, over NCCL or TCP, waits for "
          "the other ranks included): against bitserve_pipeline_stage_compute_seconds it is "
          "what dispatch and combine cost.",
          StepDurationBuckets(), {"stage", "rank"})),
      rank_tokens_(registry_.AddCounter(
          "bitserve_expert_parallel_rank_tokens_total",
          "Tokens of the sequences each expert-parallel rank ran (attention runs data-parallel: "
          "each rank its own sequences, placed by the coordinator).",
          {"rank"})),
      steps_in_flight_(registry_
                           .AddGauge("bitserve_steps_in_flight",
                                     "Steps handed to the workers and not yet answered (a pipeline "
                                     "of S stages keeps up to S).")
                           .Get()) {
  // The usual outcomes exist from the start, so that rate() over them has a zero to start from.
  for (const char* outcome : {"eos", "stop", "length", "cancelled"}) {
    requests_.WithLabels({outcome, "OK"});
  }
}

void ServingMetrics::RequestFinished(absl::string_view outcome, absl::string_view code,
                                     double e2e_seconds, int prompt_tokens, int completion_tokens) {
  requests_.WithLabels({std::string(outcome), code.empty() ? "OK" : std::string(code)}).Increment();
  e2e_.Observe(e2e_seconds);
  prompt_tokens_.Increment(std::max(prompt_tokens, 0));
  generation_tokens_.Increment(std::max(completion_tokens, 0));
  request_prompt_tokens_.Observe(prompt_tokens);
  request_generation_tokens_.Observe(completion_tokens);
}

void ServingMetrics::RequestRejected(absl::string_view code) {
  requests_.WithLabels({"rejected", code.empty() ? "UNKNOWN" : std::string(code)}).Increment();
}

void ServingMetrics::FirstToken(double ttft_seconds) {
  ttft_.Observe(ttft_seconds);
  generated_rate_.Add(1);
}

void ServingMetrics::InterTokenLatency(double seconds) {
  tpot_.Observe(seconds);
  generated_rate_.Add(1);
}

void ServingMetrics::StepDone(int num_tokens, int num_seqs, double seconds, int num_preempted) {
  step_tokens_.Observe(num_tokens);
  step_sequences_.Observe(num_seqs);
  step_duration_.Observe(seconds);
  if (num_preempted > 0) preemptions_.Increment(num_preempted);
}

void ServingMetrics::StageStepDone(int stage, double compute_seconds, double transfer_seconds) {
  stage_compute_.WithLabels({std::to_string(stage)}).Observe(compute_seconds);
  stage_transfer_.WithLabels({std::to_string(stage)}).Observe(transfer_seconds);
}

void ServingMetrics::ExpertTokens(int layer, int expert, int rank, int64_t tokens) {
  if (tokens <= 0) return;
  const std::string l = std::to_string(layer);
  expert_tokens_.WithLabels({l, std::to_string(expert)}).Increment(static_cast<double>(tokens));
  expert_rank_tokens_.WithLabels({l, std::to_string(rank)}).Increment(static_cast<double>(tokens));
}

void ServingMetrics::ExpertExchangeDone(int stage, int rank, double seconds) {
  expert_exchange_.WithLabels({std::to_string(stage), std::to_string(rank)}).Observe(seconds);
}

void ServingMetrics::RankTokens(int rank, int64_t tokens) {
  rank_tokens_.WithLabels({std::to_string(rank)}).Increment(static_cast<double>(tokens));
}

void ServingMetrics::SetStepsInFlight(int steps) { steps_in_flight_.Set(steps); }

void ServingMetrics::SetState(int waiting, int running, int kv_blocks_used, int kv_blocks_free,
                              int64_t kv_capacity_tokens, bool ready) {
  queue_depth_.Set(waiting);
  running_.Set(running);
  kv_blocks_used_.Set(kv_blocks_used);
  kv_blocks_free_.Set(kv_blocks_free);
  kv_capacity_tokens_.Set(static_cast<double>(kv_capacity_tokens));
  ready_.Set(ready ? 1 : 0);
}

void ServingMetrics::SetPrefixCache(uint64_t queries_total, uint64_t hits_total,
                                    int cached_blocks) {
  prefix_cache_queries_.Increment(static_cast<double>(queries_total) -
                                  prefix_cache_queries_.Value());
  prefix_cache_hits_.Increment(static_cast<double>(hits_total) - prefix_cache_hits_.Value());
  prefix_cache_blocks_.Set(cached_blocks);
}

std::string ServingMetrics::RenderPrometheus() const {
  throughput_.Set(generated_rate_.Rate());
  return registry_.Render();
}

}  // namespace bitserve::rpc
