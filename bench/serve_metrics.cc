#include "bench/serve_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace bitserve::bench {

double RequestRecord::ttft() const {
  return token_chunk_times.empty() ? 0 : token_chunk_times.front() - start_time;
}

double RequestRecord::latency() const {
  return token_chunk_times.empty() ? 0 : token_chunk_times.back() - start_time;
}

std::vector<double> RequestRecord::itl() const {
  std::vector<double> gaps;
  for (size_t i = 1; i < token_chunk_times.size(); ++i) {
    gaps.push_back(token_chunk_times[i] - token_chunk_times[i - 1]);
  }
  return gaps;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  // numpy "linear": the value at fractional rank p/100 * (n - 1).
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

Distribution Summarize(const std::vector<double>& values, const std::vector<double>& percentiles,
                       double scale) {
  Distribution d;
  if (!values.empty()) {
    const double n = static_cast<double>(values.size());
    const double mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
    double squares = 0;
    for (double v : values) squares += (v - mean) * (v - mean);
    d.mean = mean * scale;
    d.std = std::sqrt(squares / n) * scale;
    d.median = Percentile(values, 50) * scale;
  }
  for (double p : percentiles) d.percentiles.emplace_back(p, Percentile(values, p) * scale);
  return d;
}

namespace {

// vLLM's peak figures: output tokens per one-second bucket since the first send, and the largest
// number of overlapping [send, last token) intervals (a departure at the same instant as an
// arrival leaves first: the intervals are half-open).
void ComputePeaks(const std::vector<const RequestRecord*>& ok, ServeMetrics& m) {
  if (ok.empty()) return;
  double first = ok.front()->start_time, last = first;
  for (const RequestRecord* r : ok) {
    first = std::min(first, r->start_time);
    last = std::max(last, r->start_time + r->latency());
  }
  std::vector<double> buckets(static_cast<size_t>(std::ceil(last - first)) + 1, 0.0);
  std::vector<std::pair<double, int>> events;
  for (const RequestRecord* r : ok) {
    for (size_t i = 0; i < r->token_chunk_times.size(); ++i) {
      const auto b = static_cast<size_t>(r->token_chunk_times[i] - first);
      if (b < buckets.size()) buckets[b] += r->token_chunk_sizes[i];
    }
    events.emplace_back(r->start_time, +1);
    events.emplace_back(r->start_time + r->latency(), -1);
  }
  m.max_output_tokens_per_s = *std::max_element(buckets.begin(), buckets.end());
  std::sort(events.begin(), events.end());  // (time, -1) before (time, +1)
  int current = 0;
  for (const auto& [time, delta] : events) {
    current += delta;
    m.max_concurrent_requests = std::max(m.max_concurrent_requests, current);
  }
}

}  // namespace

ServeMetrics ComputeMetrics(const std::vector<RequestRecord>& records, double duration_s,
                            const std::vector<double>& percentiles) {
  ServeMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttfts, tpots, itls, e2els;
  std::vector<const RequestRecord*> ok;
  for (const RequestRecord& r : records) {
    if (!r.success) {
      ++m.failed;
      ++m.failures_by_code[absl::StatusCodeToString(r.status.code())];
      continue;
    }
    ++m.completed;
    ok.push_back(&r);
    m.total_input_tokens += r.prompt_tokens;
    m.total_output_tokens += r.output_tokens;
    if (r.output_tokens < r.expected_output_tokens) ++m.short_outputs;
    ttfts.push_back(r.ttft());
    e2els.push_back(r.latency());
    if (r.output_tokens > 1) {
      tpots.push_back((r.latency() - r.ttft()) / (r.output_tokens - 1));
    }
    const std::vector<double> gaps = r.itl();
    itls.insert(itls.end(), gaps.begin(), gaps.end());
  }
  if (duration_s > 0) {
    m.request_throughput = m.completed / duration_s;
    m.output_throughput = static_cast<double>(m.total_output_tokens) / duration_s;
    m.total_token_throughput =
        static_cast<double>(m.total_input_tokens + m.total_output_tokens) / duration_s;
  }
  m.ttft_ms = Summarize(ttfts, percentiles, 1000);
  m.tpot_ms = Summarize(tpots, percentiles, 1000);
  m.itl_ms = Summarize(itls, percentiles, 1000);
  m.e2el_ms = Summarize(e2els, percentiles, 1000);
  ComputePeaks(ok, m);
  return m;
}

}  // namespace bitserve::bench
