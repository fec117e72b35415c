// The statistics of `bitserve bench-serve`, defined exactly as vLLM's `vllm bench serve`
// (vllm/benchmarks/serve.py, calculate_metrics), so that numbers compare with the field:
//
//   TTFT   send -> the first chunk that carries tokens. "Send" is when the request left the client,
//          after any wait for a --max-concurrency slot (vLLM's start_time).
//   E2EL   send -> the last chunk that carries tokens (vLLM's latency).
//   TPOT   per request with output_tokens > 1: (E2EL - TTFT) / (output_tokens - 1).
//   ITL    per chunk, not per token: every token-bearing chunk after the first adds one entry, the
//          gap since the previous one, whatever the number of tokens it carries. That is vLLM's
//          definition (its request functions append one gap per streamed message); bitserve
//          streams one token per chunk, so here it is also the per-token gap. A server that
//          coalesced k tokens per chunk would show fewer, k times longer gaps (and the same TPOT).
//   output_tokens  the server's usage.completion_tokens; input tokens its usage.prompt_tokens.
//   Throughputs    completed requests, their output tokens, and their input + output tokens, each
//                  divided by the benchmark duration (start of the run to the last request's end).
//   Peak output token throughput  output tokens per one-second bucket since the first send, the
//                  largest bucket (vLLM counts one per chunk; this counts the chunk's tokens).
//   Peak concurrent requests      the most [send, last token) intervals that overlap.
// Mean, median, std (population) and percentiles (numpy's default linear interpolation) are over
// successful requests only; an empty set gives zeros, as vLLM's `np.mean(x or 0)`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace bitserve::bench {

// What the driver observed for one request. Times are seconds since the benchmark started.
struct RequestRecord {
  int index = 0;              // position in the workload
  bool sent = false;          // Submit was called (false: the benchmark timed out before)
  bool success = false;       // a final chunk with a normal finish reason and >= 1 token
  absl::Status status;        // why it failed (OK on success)
  std::string finish_reason;  // "length", "eos", "stop", "cancelled", "error", or "" if none
  int prompt_tokens = 0;      // usage.prompt_tokens (the ids sent when no usage came back)
  int output_tokens = 0;      // usage.completion_tokens
  int expected_output_tokens = 0;
  double arrival_time = 0;                // when the workload scheduled it
  double start_time = 0;                  // when it was sent
  std::vector<double> token_chunk_times;  // arrival of each chunk that carried tokens
  std::vector<int> token_chunk_sizes;     // tokens in each of those chunks

  double ttft() const;     // 0 without tokens
  double latency() const;  // E2EL; 0 without tokens
  std::vector<double> itl() const;
};

struct Distribution {
  double mean = 0, median = 0, std = 0;
  std::vector<std::pair<double, double>> percentiles;  // (p, value)
};

struct ServeMetrics {
  int completed = 0;
  int failed = 0;         // sent and failed, plus never sent (timeout)
  int short_outputs = 0;  // completed with fewer tokens than asked (max_model_len cut)
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double duration_s = 0;
  double request_throughput = 0;      // req/s
  double output_throughput = 0;       // tok/s
  double total_token_throughput = 0;  // tok/s, input + output
  double max_output_tokens_per_s = 0;
  int max_concurrent_requests = 0;
  // In milliseconds, as vLLM prints them.
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
  std::map<std::string, int> failures_by_code;  // "RESOURCE_EXHAUSTED" -> count
};

// numpy.percentile(values, p) with the default linear interpolation; p in [0, 100]. 0 when empty.
double Percentile(std::vector<double> values, double p);

// Mean, median, population std and `percentiles` of `values`, each multiplied by `scale`.
Distribution Summarize(const std::vector<double>& values, const std::vector<double>& percentiles,
                       double scale = 1.0);

ServeMetrics ComputeMetrics(const std::vector<RequestRecord>& records, double duration_s,
                            const std::vector<double>& percentiles);

}  // namespace bitserve::bench
