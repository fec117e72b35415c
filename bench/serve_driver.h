// The driver of `bitserve bench-serve`: sends a workload (bench/serve_workload.h) to any
// rpc::GenerationBackend — the gRPC client of a running `bitserve serve` or an in-process
// coordinator, with the same code — and records, per request, when each token-bearing chunk
// arrived (bench/serve_metrics.h turns that into vLLM's statistics).
//
// Arrivals follow vLLM's `vllm bench serve`: request i is due at its arrival time (request rate,
// burstiness); with max_concurrency C it is sent only once fewer than C requests are in flight
// (requests wait in order). A request holds its slot until its final chunk. Every request ends in
// exactly one record: completed, failed with the backend's status (rejected by Submit, or a final
// chunk "error"/"cancelled"), or, past the timeout, cancelled or never sent (DEADLINE_EXCEEDED).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <limits>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/serve_metrics.h"
#include "bench/serve_workload.h"
#include "rpc/generation_backend.h"

namespace bitserve::bench {

struct DriverOptions {
  int max_concurrency = 0;  // requests in flight at most; 0: no limit
  double request_rate = std::numeric_limits<double>::infinity();  // req/s; inf: all at once
  double burstiness = 1.0;                                        // 1: Poisson arrivals
  uint64_t seed = 0;                                              // of the arrival times
  // Requests sent before the measured run and not counted (vLLM's --num-warmups: copies of the
  // first request, under the same concurrency limit).
  int num_warmups = 0;
  // Wall-clock limit of the measured run in seconds (0: none). When it passes, requests in flight
  // are cancelled and the rest are not sent; both count as failed.
  double timeout_s = 0;
  std::ostream* progress = nullptr;  // a line per ~10% of the requests, when set
};

struct DriverResult {
  std::vector<RequestRecord> records;  // one per workload request, in workload order
  // From the start of the run (the first request is due at its arrival time after it, as in
  // vLLM) to the last final chunk. Record times count from the same start.
  double duration_s = 0;
  int warmup_failed = 0;
};

// Runs warm-up and the measured run. Not OK only for bad options; failed requests are records.
absl::StatusOr<DriverResult> RunServeBenchmark(rpc::GenerationBackend& backend,
                                               const std::vector<BenchRequest>& requests,
                                               const DriverOptions& options);

}  // namespace bitserve::bench
