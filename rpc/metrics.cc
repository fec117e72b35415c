#include "rpc/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace bitserve::rpc {

void Counter::Increment(double amount) {
  if (!(amount >= 0)) return;
  value_.fetch_add(amount, std::memory_order_relaxed);
}

void Gauge::Add(double amount) { value_.fetch_add(amount, std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    BITSERVE_CHECK(std::isfinite(bounds_[i])) << "histogram bound " << bounds_[i];
    BITSERVE_CHECK(i == 0 || bounds_[i - 1] < bounds_[i]) << "histogram bounds must increase";
  }
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // lower_bound: the first bound >= value, so a value equal to a bound lands in that bucket.
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.cumulative.resize(counts_.size());
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t running = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    running += counts_[i];
    snapshot.cumulative[i] = running;
  }
  snapshot.count = running;
  snapshot.sum = sum_;
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  BITSERVE_CHECK(start > 0 && factor > 1 && count > 0);
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  // Shortest representation that parses back to the same double (Go's and Python's float parsers
  // both accept it; integers print without a fraction or exponent up to 2^53).
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

bool ValidName(absl::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` from names and values, with `extra` (already formatted `le="..."`) appended;
// empty when there is nothing to put in braces.
std::string LabelBlock(const std::vector<std::string>& names,
                       const std::vector<std::string>& values, const std::string& extra = "") {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra.empty()) {
    if (!names.empty()) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

}  // namespace

template <typename T>
MetricFamily<T>::MetricFamily(std::string name, std::string help, MetricType type,
                              std::vector<std::string> label_names, std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {}

template <typename T>
T& MetricFamily<T>::WithLabels(const std::vector<std::string>& values) {
  BITSERVE_CHECK(values.size() == label_names_.size())
      << name_ << ": " << values.size() << " label values for " << label_names_.size() << " labels";
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    std::unique_ptr<T> child;
    if constexpr (std::is_same_v<T, Histogram>) {
      child = std::make_unique<Histogram>(bounds_);
    } else {
      child = std::make_unique<T>();
    }
    it = children_.emplace(values, std::move(child)).first;
  }
  return *it->second;
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

namespace {

void CheckNames(const std::string& name, const std::vector<std::string>& labels) {
  BITSERVE_CHECK(ValidName(name, /*allow_colon=*/true)) << "metric name \"" << name << "\"";
  for (const std::string& label : labels) {
    BITSERVE_CHECK(ValidName(label, /*allow_colon=*/false) && label != "le" &&
                   label.rfind("__", 0) != 0)
        << name << ": label name \"" << label << "\"";
  }
}

}  // namespace

CounterFamily& MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                           std::vector<std::string> label_names) {
  CheckNames(name, label_names);
  std::lock_guard<std::mutex> lock(mu_);
  BITSERVE_CHECK(std::find(names_.begin(), names_.end(), name) == names_.end()) << name;
  names_.push_back(name);
  const bool unlabelled = label_names.empty();
  counters_.emplace_back(
      new CounterFamily(name, help, MetricType::kCounter, std::move(label_names), {}));
  order_.push_back({MetricType::kCounter, counters_.size() - 1});
  if (unlabelled) counters_.back()->Get();
  return *counters_.back();
}

GaugeFamily& MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names) {
  CheckNames(name, label_names);
  std::lock_guard<std::mutex> lock(mu_);
  BITSERVE_CHECK(std::find(names_.begin(), names_.end(), name) == names_.end()) << name;
  names_.push_back(name);
  const bool unlabelled = label_names.empty();
  gauges_.emplace_back(new GaugeFamily(name, help, MetricType::kGauge, std::move(label_names), {}));
  order_.push_back({MetricType::kGauge, gauges_.size() - 1});
  if (unlabelled) gauges_.back()->Get();
  return *gauges_.back();
}

HistogramFamily& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                               std::vector<double> bounds,
                                               std::vector<std::string> label_names) {
  CheckNames(name, label_names);
  Histogram check(bounds);  // validates the bounds here, at registration
  std::lock_guard<std::mutex> lock(mu_);
  BITSERVE_CHECK(std::find(names_.begin(), names_.end(), name) == names_.end()) << name;
  names_.push_back(name);
  const bool unlabelled = label_names.empty();
  histograms_.emplace_back(new HistogramFamily(name, help, MetricType::kHistogram,
                                               std::move(label_names), std::move(bounds)));
  order_.push_back({MetricType::kHistogram, histograms_.size() - 1});
  if (unlabelled) histograms_.back()->Get();
  return *histograms_.back();
}

namespace {

void RenderHeader(const std::string& name, const std::string& help, MetricType type,
                  std::string* out) {
  if (!help.empty()) absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n");
  absl::StrAppend(out, "# TYPE ", name, " ", TypeName(type), "\n");
}

}  // namespace

std::string MetricsRegistry::Render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const Entry& entry : order_) {
    switch (entry.type) {
      case MetricType::kCounter: {
        const CounterFamily& f = *counters_[entry.index];
        RenderHeader(f.name_, f.help_, f.type_, &out);
        std::lock_guard<std::mutex> family_lock(f.mu_);
        for (const auto& [values, child] : f.children_) {
          absl::StrAppend(&out, f.name_, LabelBlock(f.label_names_, values), " ",
                          FormatMetricValue(child->Value()), "\n");
        }
        break;
      }
      case MetricType::kGauge: {
        const GaugeFamily& f = *gauges_[entry.index];
        RenderHeader(f.name_, f.help_, f.type_, &out);
        std::lock_guard<std::mutex> family_lock(f.mu_);
        for (const auto& [values, child] : f.children_) {
          absl::StrAppend(&out, f.name_, LabelBlock(f.label_names_, values), " ",
                          FormatMetricValue(child->Value()), "\n");
        }
        break;
      }
      case MetricType::kHistogram: {
        const HistogramFamily& f = *histograms_[entry.index];
        RenderHeader(f.name_, f.help_, f.type_, &out);
        std::lock_guard<std::mutex> family_lock(f.mu_);
        for (const auto& [values, child] : f.children_) {
          const Histogram::Snapshot s = child->Read();
          for (size_t i = 0; i <= f.bounds_.size(); ++i) {
            const std::string le = i < f.bounds_.size() ? FormatMetricValue(f.bounds_[i]) : "+Inf";
            absl::StrAppend(&out, f.name_, "_bucket",
                            LabelBlock(f.label_names_, values, absl::StrCat("le=\"", le, "\"")),
                            " ", s.cumulative[i], "\n");
          }
          const std::string labels = LabelBlock(f.label_names_, values);
          absl::StrAppend(&out, f.name_, "_sum", labels, " ", FormatMetricValue(s.sum), "\n");
          absl::StrAppend(&out, f.name_, "_count", labels, " ", s.count, "\n");
        }
        break;
      }
    }
  }
  return out;
}

}  // namespace bitserve::rpc
