// What `bitserve bench-serve` prints and writes: vLLM's "Serving Benchmark Result" block (same
// labels and layout, so the two can be read side by side) and, for --json, the same numbers under
// vLLM's result keys ("mean_ttft_ms", "p99_itl_ms", "output_throughput", per-request "ttfts",
// "itls", ...) together with the benchmark's parameters.
#pragma once

#include <string>
#include <vector>

#include "bench/serve_driver.h"
#include "bench/serve_metrics.h"
#include "nlohmann/json.hpp"

namespace bitserve::bench {

struct ReportContext {
  int max_concurrency = 0;  // 0: not printed (no limit)
  double request_rate = 0;  // inf: not printed
  int warmup_failed = 0;
  int max_errors_shown = 10;
};

// The text block, then the failures (count per status code, the first few messages) and warnings.
std::string FormatReport(const ServeMetrics& metrics, const std::vector<RequestRecord>& records,
                         const ReportContext& context);

// Everything in one object: "parameters" (as given), the metrics, and the per-request lists.
nlohmann::ordered_json ReportJson(const ServeMetrics& metrics,
                                  const std::vector<RequestRecord>& records,
                                  const ReportContext& context,
                                  const nlohmann::ordered_json& parameters);

}  // namespace bitserve::bench
