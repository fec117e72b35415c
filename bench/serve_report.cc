#include "bench/serve_report.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bitserve::bench {
namespace {

// Python's "{s:{c}^{n}}".format(...): `text` centred in `width` columns of `fill`, the odd column
// on the right.
std::string Centered(const std::string& text, char fill, int width = 50) {
  const int pad = std::max(0, width - static_cast<int>(text.size()));
  return std::string(pad / 2, fill) + text + std::string(pad - pad / 2, fill);
}

// vLLM's "{:<40} {:<10}" rows.
std::string Row(const std::string& label, double value) {
  return absl::StrFormat("%-40s %-10.2f\n", label, value);
}
std::string Row(const std::string& label, int64_t value) {
  return absl::StrFormat("%-40s %-10d\n", label, value);
}

// "99" for 99, "99.9" for 99.9, as vLLM names its percentile keys.
std::string PercentileName(double p) { return absl::StrCat(p); }

struct NamedDistribution {
  const char* key;     // "ttft"
  const char* name;    // "TTFT"
  const char* header;  // "Time to First Token"
  const Distribution* values;
};

std::vector<NamedDistribution> Distributions(const ServeMetrics& m) {
  return {{"ttft", "TTFT", "Time to First Token", &m.ttft_ms},
          {"tpot", "TPOT", "Time per Output Token (excl. 1st token)", &m.tpot_ms},
          {"itl", "ITL", "Inter-token Latency", &m.itl_ms},
          {"e2el", "E2EL", "End-to-end Latency", &m.e2el_ms}};
}

std::string ErrorText(const RequestRecord& r) {
  if (r.success) return "";
  return absl::StrCat(absl::StatusCodeToString(r.status.code()), ": ", r.status.message());
}

}  // namespace

std::string FormatReport(const ServeMetrics& m, const std::vector<RequestRecord>& records,
                         const ReportContext& context) {
  std::string out = Centered(" Serving Benchmark Result ", '=') + "\n";
  out += Row("Successful requests:", int64_t{m.completed});
  out += Row("Failed requests:", int64_t{m.failed});
  if (context.max_concurrency > 0) {
    out += Row("Maximum request concurrency:", int64_t{context.max_concurrency});
  }
  if (!std::isinf(context.request_rate)) {
    out += Row("Request rate configured (RPS):", context.request_rate);
  }
  out += Row("Benchmark duration (s):", m.duration_s);
  out += Row("Total input tokens:", m.total_input_tokens);
  out += Row("Total generated tokens:", m.total_output_tokens);
  out += Row("Request throughput (req/s):", m.request_throughput);
  out += Row("Output token throughput (tok/s):", m.output_throughput);
  out += Row("Peak output token throughput (tok/s):", m.max_output_tokens_per_s);
  out += Row("Peak concurrent requests:", static_cast<double>(m.max_concurrent_requests));
  out += Row("Total Token throughput (tok/s):", m.total_token_throughput);
  for (const NamedDistribution& d : Distributions(m)) {
    out += Centered(d.header, '-') + "\n";
    out += Row(absl::StrCat("Mean ", d.name, " (ms):"), d.values->mean);
    out += Row(absl::StrCat("Median ", d.name, " (ms):"), d.values->median);
    for (const auto& [p, value] : d.values->percentiles) {
      out += Row(absl::StrCat("P", PercentileName(p), " ", d.name, " (ms):"), value);
    }
  }
  out += std::string(50, '=') + "\n";
  if (m.failed > 0) {
    out += "Failed requests by status code:";
    for (const auto& [code, count] : m.failures_by_code) {
      out += absl::StrCat(" ", code, " ", count);
    }
    out += "\n";
    int shown = 0;
    for (const RequestRecord& r : records) {
      if (r.success || shown++ >= context.max_errors_shown) continue;
      out += absl::StrCat("  request ", r.index, ": ", ErrorText(r), "\n");
    }
  }
  if (m.short_outputs > 0) {
    out += absl::StrCat("Note: ", m.short_outputs,
                        " completed requests produced fewer tokens than asked (the server's "
                        "max_model_len cut them); throughput counts the tokens produced\n");
  }
  if (context.warmup_failed > 0) {
    out += absl::StrCat("Note: ", context.warmup_failed, " warm-up requests failed\n");
  }
  return out;
}

nlohmann::ordered_json ReportJson(const ServeMetrics& m, const std::vector<RequestRecord>& records,
                                  const ReportContext& context,
                                  const nlohmann::ordered_json& parameters) {
  nlohmann::ordered_json j;
  j["parameters"] = parameters;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["failures_by_code"] = m.failures_by_code;
  j["short_outputs"] = m.short_outputs;
  j["warmup_failed"] = context.warmup_failed;
  j["total_input_tokens"] = m.total_input_tokens;
  j["total_output_tokens"] = m.total_output_tokens;
  j["request_throughput"] = m.request_throughput;
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  for (const NamedDistribution& d : Distributions(m)) {
    j[absl::StrCat("mean_", d.key, "_ms")] = d.values->mean;
    j[absl::StrCat("median_", d.key, "_ms")] = d.values->median;
    j[absl::StrCat("std_", d.key, "_ms")] = d.values->std;
    for (const auto& [p, value] : d.values->percentiles) {
      j[absl::StrCat("p", PercentileName(p), "_", d.key, "_ms")] = value;
    }
  }
  // Per request, in workload order, in seconds (vLLM's lists; a failed request has output 0).
  auto& input_lens = j["input_lens"] = nlohmann::ordered_json::array();
  auto& output_lens = j["output_lens"] = nlohmann::ordered_json::array();
  auto& ttfts = j["ttfts"] = nlohmann::ordered_json::array();
  auto& itls = j["itls"] = nlohmann::ordered_json::array();
  auto& latencies = j["latencies"] = nlohmann::ordered_json::array();
  auto& start_times = j["start_times"] = nlohmann::ordered_json::array();
  auto& queue_times = j["queue_times"] = nlohmann::ordered_json::array();
  auto& errors = j["errors"] = nlohmann::ordered_json::array();
  for (const RequestRecord& r : records) {
    input_lens.push_back(r.prompt_tokens);
    output_lens.push_back(r.success ? r.output_tokens : 0);
    ttfts.push_back(r.ttft());
    itls.push_back(r.itl());
    latencies.push_back(r.latency());
    start_times.push_back(r.start_time);
    queue_times.push_back(r.sent ? r.start_time - r.arrival_time : 0.0);
    errors.push_back(ErrorText(r));
  }
  return j;
}

}  // namespace bitserve::bench
