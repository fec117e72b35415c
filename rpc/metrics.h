// A small thread-safe Prometheus registry: counters, gauges and histograms, each a family of
// children told apart by label values, rendered in the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/):
//
//   # HELP bitserve_requests_total Requests finished, by outcome.
//   # TYPE bitserve_requests_total counter
//   bitserve_requests_total{outcome="eos",code="OK"} 12
//   # TYPE bitserve_step_tokens histogram
//   bitserve_step_tokens_bucket{le="1"} 3          <- cumulative: observations <= le
//   bitserve_step_tokens_bucket{le="+Inf"} 7       <- always present, equals _count
//   bitserve_step_tokens_sum 1234
//   bitserve_step_tokens_count 7
//
// Updates are lock-free for counters and gauges (atomics) and take one uncontended mutex for a
// histogram; looking up a labelled child takes the family's mutex, so hot paths keep the child
// reference (children live as long as the registry and never move).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace bitserve::rpc {

class Counter {
 public:
  // `amount` must be >= 0 (a counter never goes down); negative amounts are ignored.
  void Increment(double amount = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double amount);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // `bounds`: the upper bounds of the buckets, strictly increasing and finite (+Inf is implicit).
  explicit Histogram(std::vector<double> bounds);

  // Counts `value` in the first bucket whose bound is >= value (Prometheus buckets are "le").
  // NaN is ignored.
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), the last one is (last bound, +Inf)
  double sum_ = 0;
};

// Bucket bounds helpers: start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class MetricType { kCounter, kGauge, kHistogram };

// The children of one metric name, one per distinct tuple of label values.
template <typename T>
class MetricFamily {
 public:
  // The child for these label values (one per label name, in order), created on first use.
  // A wrong number of values is a programming error (BITSERVE_CHECK).
  T& WithLabels(const std::vector<std::string>& values);
  // The child of a family without labels.
  T& Get() { return WithLabels({}); }

 private:
  friend class MetricsRegistry;
  MetricFamily(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names, std::vector<double> bounds);

  const std::string name_, help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;  // sorted: stable output
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

class MetricsRegistry {
 public:
  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and must not be
  // "le" or start with "__"; a name registered twice is a programming error (BITSERVE_CHECK).
  // A family without labels has its one child created at once, so it renders as 0 from the start.
  CounterFamily& AddCounter(const std::string& name, const std::string& help,
                            std::vector<std::string> label_names = {});
  GaugeFamily& AddGauge(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names = {});
  HistogramFamily& AddHistogram(const std::string& name, const std::string& help,
                                std::vector<double> bounds,
                                std::vector<std::string> label_names = {});

  // The text exposition format 0.0.4, families in registration order, children sorted by their
  // label values. A family with labels but no child yet renders its HELP and TYPE lines only.
  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<CounterFamily>> counters_;
  std::vector<std::unique_ptr<GaugeFamily>> gauges_;
  std::vector<std::unique_ptr<HistogramFamily>> histograms_;
  struct Entry {
    MetricType type;
    size_t index;
  };
  std::vector<Entry> order_;
  std::vector<std::string> names_;
};

// Exposition-format pieces, exposed for tests.
// A sample value: shortest round-trip decimal, "+Inf", "-Inf" or "NaN".
std::string FormatMetricValue(double value);
// A label value inside double quotes: backslash, double quote and newline escaped.
std::string EscapeLabelValue(absl::string_view value);
// HELP text: backslash and newline escaped.
std::string EscapeHelp(absl::string_view help);

}  // namespace bitserve::rpc
