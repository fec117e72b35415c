#include "rpc/metrics.h"

#include <cmath>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rpc/metrics_http.h"
#include "rpc/serving_metrics.h"

namespace bitserve::rpc {
namespace {

using ::testing::HasSubstr;

// A strict parser of the text exposition format 0.0.4, independent of the renderer: every line is
// a "# HELP name text", a "# TYPE name type" or "name{labels} value"; label values are unescaped.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
struct Exposition {
  std::map<std::string, std::string> help, type;
  std::vector<std::string> type_order;
  std::vector<Sample> samples;
};

double ParseValue(const std::string& text) {
  if (text == "+Inf") return INFINITY;
  if (text == "-Inf") return -INFINITY;
  if (text == "NaN") return NAN;
  double value;
  EXPECT_TRUE(absl::SimpleAtod(text, &value)) << text;
  return value;
}

Exposition Parse(const std::string& text) {
  Exposition out;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "the last line must end with \\n";
  for (absl::string_view line_view : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const std::string line(line_view);
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      EXPECT_NE(space, std::string::npos) << line;
      const std::string name = rest.substr(0, space), value = rest.substr(space + 1);
      if (line[2] == 'H') {
        EXPECT_FALSE(out.help.count(name)) << "second HELP for " << name;
        out.help[name] = value;
      } else {
        EXPECT_FALSE(out.type.count(name)) << "second TYPE for " << name;
        EXPECT_THAT((std::set<std::string>{"counter", "gauge", "histogram"}),
                    ::testing::Contains(value));
        out.type[name] = value;
        out.type_order.push_back(name);
      }
      continue;
    }
    EXPECT_NE(line[0], '#') << line;
    Sample sample;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    sample.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (line[i] != '}') {
        const size_t eq = line.find('=', i);
        const std::string label = line.substr(i, eq - i);
        EXPECT_EQ(line[eq + 1], '"') << line;
        std::string value;
        size_t j = eq + 2;
        for (; line[j] != '"'; ++j) {
          if (line[j] == '\\') {
            ++j;
            EXPECT_THAT(std::string("\\\"n"), HasSubstr(std::string(1, line[j]))) << line;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        EXPECT_FALSE(sample.labels.count(label)) << line;
        sample.labels[label] = value;
        i = j + 1;
        if (line[i] == ',') ++i;
      }
      ++i;
    }
    EXPECT_EQ(line[i], ' ') << line;
    sample.value = ParseValue(line.substr(i + 1));
    out.samples.push_back(sample);
  }
  return out;
}

// The family a sample belongs to, checking that its TYPE came first.
std::string FamilyOf(const Exposition& e, const std::string& sample_name) {
  if (e.type.count(sample_name)) return sample_name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s = suffix;
    if (sample_name.size() > s.size() &&
        sample_name.compare(sample_name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = sample_name.substr(0, sample_name.size() - s.size());
      if (e.type.count(base) && e.type.at(base) == "histogram") return base;
    }
  }
  return "";
}

const Sample* Find(const Exposition& e, const std::string& name,
                   const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& s : e.samples) {
    if (s.name == name && s.labels == labels) return &s;
  }
  return nullptr;
}

// Checks the histogram rules: buckets cumulative and increasing in le, +Inf present and equal to
// _count, one _sum and _count per label set.
void CheckHistograms(const Exposition& e) {
  for (const auto& [family, type] : e.type) {
    if (type != "histogram") continue;
    std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> buckets;
    for (const Sample& s : e.samples) {
      if (s.name != family + "_bucket") continue;
      ASSERT_TRUE(s.labels.count("le")) << family;
      auto labels = s.labels;
      const double le = ParseValue(labels["le"]);
      labels.erase("le");
      buckets[labels].push_back({le, s.value});
    }
    for (const auto& [labels, list] : buckets) {
      ASSERT_FALSE(list.empty());
      for (size_t i = 1; i < list.size(); ++i) {
        EXPECT_LT(list[i - 1].first, list[i].first) << family;
        EXPECT_LE(list[i - 1].second, list[i].second) << family << " buckets not cumulative";
      }
      EXPECT_TRUE(std::isinf(list.back().first)) << family << " lacks +Inf";
      const Sample* count = Find(e, family + "_count", labels);
      ASSERT_NE(count, nullptr) << family;
      EXPECT_EQ(count->value, list.back().second) << family;
      EXPECT_NE(Find(e, family + "_sum", labels), nullptr) << family;
    }
  }
}

TEST(MetricsFormat, Values) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(42), "42");
  EXPECT_EQ(FormatMetricValue(-3), "-3");
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatMetricValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatMetricValue(NAN), "NaN");
  const double odd = 0.1 + 0.2;
  double back;
  ASSERT_TRUE(absl::SimpleAtod(FormatMetricValue(odd), &back));
  EXPECT_EQ(back, odd);  // shortest round-trip, not 6 digits
}

TEST(MetricsFormat, Escaping) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeHelp("a\\b\"c\nd"), "a\\\\b\"c\\nd");  // quotes stay in HELP
}

TEST(MetricsRegistry, RendersExactly) {
  MetricsRegistry registry;
  CounterFamily& requests =
      registry.AddCounter("x_requests_total", "Requests.\nBy outcome.", {"outcome", "code"});
  Gauge& depth = registry.AddGauge("x_queue_depth", "Waiting.").Get();
  Histogram& latency = registry.AddHistogram("x_latency_seconds", "", {0.5, 1, 2.5}).Get();
  registry.AddGauge("x_empty", "Labelled, no child yet.", {"kind"});
  requests.WithLabels({"stop", "OK"}).Increment(2);
  requests.WithLabels({"error", "UNAVAILABLE"}).Increment();
  requests.WithLabels({"odd\"\\\n", "OK"}).Increment();
  depth.Set(7);
  for (double v : {0.1, 0.5, 0.7, 3.0}) latency.Observe(v);
  EXPECT_EQ(registry.Render(),
            "# HELP x_requests_total Requests.\\nBy outcome.\n"
            "# TYPE x_requests_total counter\n"
            "x_requests_total{outcome=\"error\",code=\"UNAVAILABLE\"} 1\n"
            "x_requests_total{outcome=\"odd\\\"\\\\\\n\",code=\"OK\"} 1\n"
            "x_requests_total{outcome=\"stop\",code=\"OK\"} 2\n"
            "# HELP x_queue_depth Waiting.\n"
            "# TYPE x_queue_depth gauge\n"
            "x_queue_depth 7\n"
            "# TYPE x_latency_seconds histogram\n"
            "x_latency_seconds_bucket{le=\"0.5\"} 2\n"
            "x_latency_seconds_bucket{le=\"1\"} 3\n"
            "x_latency_seconds_bucket{le=\"2.5\"} 3\n"
            "x_latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "x_latency_seconds_sum 4.3\n"
            "x_latency_seconds_count 4\n"
            "# HELP x_empty Labelled, no child yet.\n"
            "# TYPE x_empty gauge\n");
  const Exposition e = Parse(registry.Render());
  const Sample* odd = Find(e, "x_requests_total", {{"outcome", "odd\"\\\n"}, {"code", "OK"}});
  ASSERT_NE(odd, nullptr) << "escaped label value does not parse back";
  EXPECT_EQ(odd->value, 1);
  CheckHistograms(e);
}

TEST(MetricsRegistry, LabelledHistogram) {
  MetricsRegistry registry;
  HistogramFamily& h = registry.AddHistogram("h", "H.", {1, 2}, {"stage"});
  h.WithLabels({"a"}).Observe(1.5);
  h.WithLabels({"b"}).Observe(5);
  const Exposition e = Parse(registry.Render());
  CheckHistograms(e);
  EXPECT_EQ(Find(e, "h_bucket", {{"stage", "a"}, {"le", "2"}})->value, 1);
  EXPECT_EQ(Find(e, "h_bucket", {{"stage", "b"}, {"le", "2"}})->value, 0);
  EXPECT_EQ(Find(e, "h_bucket", {{"stage", "b"}, {"le", "+Inf"}})->value, 1);
  EXPECT_EQ(Find(e, "h_sum", {{"stage", "b"}})->value, 5);
}

TEST(Histogram, Bucketing) {
  Histogram h({1, 2, 5});
  // A value equal to a bound belongs to that bucket ("le"); below the first bound to the first;
  // above the last only to +Inf; NaN nowhere.
  for (double v :
       {-1.0, 0.0, 1.0, 1.0000001, 2.0, 4.9, 5.0, 5.1, 1e300, double{INFINITY}, double{NAN}}) {
    h.Observe(v);
  }
  const Histogram::Snapshot s = h.Read();
  EXPECT_THAT(s.cumulative, ::testing::ElementsAre(3, 5, 7, 10));
  EXPECT_EQ(s.count, 10u);
  EXPECT_TRUE(std::isinf(s.sum));
  EXPECT_THAT(ExponentialBuckets(1, 2, 4), ::testing::ElementsAre(1, 2, 4, 8));
}

TEST(Counter, IgnoresNegative) {
  Counter c;
  c.Increment(2.5);
  c.Increment(-1);
  c.Increment(NAN);
  EXPECT_EQ(c.Value(), 2.5);
}

TEST(MetricsRegistry, ConcurrentUpdatesAndScrapes) {
  MetricsRegistry registry;
  CounterFamily& counter = registry.AddCounter("c_total", "C.", {"thread"});
  Counter& shared = registry.AddCounter("shared_total", "S.").Get();
  Gauge& gauge = registry.AddGauge("g", "G.").Get();
  Histogram& histogram = registry.AddHistogram("h", "H.", {10, 100}).Get();
  constexpr int kThreads = 8, kPerThread = 20000;
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    // Scrapes racing with updates must always be well formed (+Inf == _count, cumulative).
    while (!done.load()) CheckHistograms(Parse(registry.Render()));
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& mine = counter.WithLabels({std::to_string(t % 3)});
      for (int i = 0; i < kPerThread; ++i) {
        mine.Increment();
        shared.Increment(0.5);
        gauge.Add(1);
        histogram.Observe(i % 200);
        // New children appear while others render.
        if (i % 1000 == 0) counter.WithLabels({"extra" + std::to_string(i)}).Increment();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  done = true;
  scraper.join();
  const Exposition e = Parse(registry.Render());
  double per_thread_sum = 0;
  for (const Sample& s : e.samples) {
    if (s.name == "c_total" && s.labels.at("thread").rfind("extra", 0) != 0)
      per_thread_sum += s.value;
  }
  EXPECT_EQ(per_thread_sum, kThreads * kPerThread);
  EXPECT_EQ(Find(e, "c_total", {{"thread", "extra0"}})->value, kThreads);
  EXPECT_EQ(Find(e, "shared_total")->value, kThreads * kPerThread * 0.5);
  EXPECT_EQ(Find(e, "g")->value, kThreads * kPerThread);
  EXPECT_EQ(Find(e, "h_count")->value, kThreads * kPerThread);
  EXPECT_EQ(Find(e, "h_bucket", {{"le", "10"}})->value, kThreads * (kPerThread / 200) * 11);
  CheckHistograms(e);
}

TEST(RateWindow, SlidesOverTenSeconds) {
  using Clock = RateWindow::Clock;
  const Clock::time_point t0 = Clock::now();
  auto at = [&](double s) {
    return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  RateWindow window(10, t0);
  EXPECT_EQ(window.Rate(t0), 0);
  window.Add(100, at(0.5));
  EXPECT_DOUBLE_EQ(window.Rate(at(2)), 50);  // young window: over the 2 s it has existed
  for (int s = 1; s < 30; ++s) window.Add(100, at(s + 0.5));
  EXPECT_NEAR(window.Rate(at(29.999)), 1000 / 9.999, 1e-9);  // seconds 20..29
  // Nothing for 5 s: seconds 26..29 remain in the window of 9 whole seconds and the current one.
  EXPECT_NEAR(window.Rate(at(35)), 400.0 / 9, 1e-9);
  EXPECT_NEAR(window.Rate(at(0.001)), 100, 1e-9);  // never divided by less than a second
  EXPECT_EQ(window.Rate(at(60)), 0);               // old slots do not come back
}

TEST(ServingMetrics, RendersEveryMetric) {
  ServingMetrics metrics;
  metrics.SetState(3, 5, 40, 24, 1024, true);
  metrics.SetPrefixCache(100, 30, 4);
  metrics.SetPrefixCache(250, 90, 6);  // totals: the counters follow them
  metrics.RequestFinished("stop", "OK", 1.5, 10, 20);
  metrics.RequestFinished("error", "UNAVAILABLE", 0.2, 7, 0);
  metrics.RequestFinished("length", "", 3.0, 5, 16);
  metrics.RequestRejected("RESOURCE_EXHAUSTED");
  metrics.FirstToken(0.05);
  for (int i = 0; i < 19; ++i) metrics.InterTokenLatency(0.02);
  metrics.StepDone(130, 5, 0.04, 2);
  metrics.StepDone(5, 5, 0.01, 0);
  const std::string text = metrics.RenderPrometheus();
  const Exposition e = Parse(text);
  CheckHistograms(e);
  for (const Sample& s : e.samples) {
    EXPECT_EQ(s.name.rfind("bitserve_", 0), 0u) << s.name;
    EXPECT_FALSE(FamilyOf(e, s.name).empty()) << s.name << " has no TYPE line";
  }
  for (const char* name :
       {"bitserve_requests_total", "bitserve_queue_depth", "bitserve_running_sequences",
        "bitserve_kv_blocks_used", "bitserve_kv_blocks_free", "bitserve_kv_capacity_tokens",
        "bitserve_ready", "bitserve_time_to_first_token_seconds",
        "bitserve_time_per_output_token_seconds", "bitserve_e2e_request_latency_seconds",
        "bitserve_prompt_tokens_total", "bitserve_generation_tokens_total", "bitserve_step_tokens",
        "bitserve_step_duration_seconds", "bitserve_preemptions_total",
        "bitserve_generation_tokens_per_second", "bitserve_prefix_cache_queries_total",
        "bitserve_prefix_cache_hits_total", "bitserve_prefix_cache_blocks"}) {
    EXPECT_TRUE(e.type.count(name)) << name;
    EXPECT_TRUE(e.help.count(name)) << name;
  }
  auto value = [&](const std::string& name, std::map<std::string, std::string> labels = {}) {
    const Sample* s = Find(e, name, labels);
    EXPECT_NE(s, nullptr) << name;
    return s ? s->value : -1;
  };
  EXPECT_EQ(value("bitserve_prefix_cache_queries_total"), 250);
  EXPECT_EQ(value("bitserve_prefix_cache_hits_total"), 90);
  EXPECT_EQ(value("bitserve_prefix_cache_blocks"), 6);
  EXPECT_EQ(value("bitserve_requests_total", {{"outcome", "stop"}, {"code", "OK"}}), 1);
  EXPECT_EQ(value("bitserve_requests_total", {{"outcome", "length"}, {"code", "OK"}}), 1);
  EXPECT_EQ(value("bitserve_requests_total", {{"outcome", "eos"}, {"code", "OK"}}), 0);
  EXPECT_EQ(value("bitserve_requests_total", {{"outcome", "error"}, {"code", "UNAVAILABLE"}}), 1);
  EXPECT_EQ(
      value("bitserve_requests_total", {{"outcome", "rejected"}, {"code", "RESOURCE_EXHAUSTED"}}),
      1);
  EXPECT_EQ(value("bitserve_queue_depth"), 3);
  EXPECT_EQ(value("bitserve_running_sequences"), 5);
  EXPECT_EQ(value("bitserve_kv_blocks_used"), 40);
  EXPECT_EQ(value("bitserve_kv_blocks_free"), 24);
  EXPECT_EQ(value("bitserve_kv_capacity_tokens"), 1024);
  EXPECT_EQ(value("bitserve_ready"), 1);
  EXPECT_EQ(value("bitserve_prompt_tokens_total"), 22);
  EXPECT_EQ(value("bitserve_generation_tokens_total"), 36);
  EXPECT_EQ(value("bitserve_preemptions_total"), 2);
  EXPECT_EQ(value("bitserve_e2e_request_latency_seconds_count"), 3);
  EXPECT_EQ(value("bitserve_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(value("bitserve_time_per_output_token_seconds_count"), 19);
  EXPECT_EQ(value("bitserve_time_per_output_token_seconds_bucket", {{"le", "0.025"}}), 19);
  EXPECT_EQ(value("bitserve_time_per_output_token_seconds_bucket", {{"le", "0.01"}}), 0);
  EXPECT_EQ(value("bitserve_step_tokens_bucket", {{"le", "128"}}), 1);
  EXPECT_EQ(value("bitserve_step_tokens_bucket", {{"le", "256"}}), 2);
  EXPECT_EQ(value("bitserve_step_duration_seconds_sum"), 0.05);
  // 20 tokens just now, over a window that counts as one second old.
  EXPECT_NEAR(value("bitserve_generation_tokens_per_second"), 20, 1e-9);
}

std::string Fetch(int port, const std::string& path, int* status, std::string* content_type) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  auto result = client.Get(path.c_str());
  if (!result) {
    *status = -1;
    return "";
  }
  *status = result->status;
  if (content_type) *content_type = result->get_header_value("Content-Type");
  return result->body;
}

TEST(MetricsHttpServer, ServesMetricsAndHealth) {
  ServingMetrics metrics;
  metrics.RequestFinished("eos", "OK", 0.5, 3, 4);
  auto server = StartMetricsServer("127.0.0.1:0", [&] { return metrics.RenderPrometheus(); });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  int status = 0;
  std::string content_type;
  const std::string body = Fetch(port, "/metrics", &status, &content_type);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(
      body.substr(0, body.find("bitserve_generation_tokens_per_second")),
      metrics.RenderPrometheus().substr(0, body.find("bitserve_generation_tokens_per_second")));
  const Exposition e = Parse(body);
  EXPECT_EQ(Find(e, "bitserve_requests_total", {{"outcome", "eos"}, {"code", "OK"}})->value, 1);
  EXPECT_EQ(Fetch(port, "/healthz", &status, nullptr), "ok\n");
  EXPECT_EQ(status, 200);
  Fetch(port, "/nope", &status, nullptr);
  EXPECT_EQ(status, 404);

  // Another server cannot take the same port.
  auto clash = StartMetricsServer("127.0.0.1:" + std::to_string(port), [] { return ""; });
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kUnavailable) << clash.status();

  (*server)->Stop();
  (*server)->Stop();  // idempotent
  Fetch(port, "/metrics", &status, nullptr);
  EXPECT_EQ(status, -1) << "still answering after Stop";
}

TEST(MetricsHttpServer, KeepAliveClientDoesNotDelayStop) {
  auto server = StartMetricsServer("127.0.0.1:0", [] { return "x 1\n"; });
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_keep_alive(true);
  for (int i = 0; i < 3; ++i) {
    auto result = client.Get("/metrics");
    ASSERT_TRUE(result);
    EXPECT_EQ(result->body, "x 1\n");
  }
  const auto start = std::chrono::steady_clock::now();
  (*server)->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(MetricsHttpServer, StopsRightAfterStart) {
  for (int i = 0; i < 20; ++i) {
    auto server = StartMetricsServer(":0", [] { return ""; });
    ASSERT_TRUE(server.ok()) << server.status();
  }  // destructor stops; a lost stop() would hang here
}

TEST(MetricsHttpServer, BadAddresses) {
  for (const char* bad : {"localhost", "1.2.3.4:x", "127.0.0.1:70000", "::1:80", "h:-1"}) {
    auto server = StartMetricsServer(bad, [] { return ""; });
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(server.status().message()), HasSubstr(bad));
  }
}

}  // namespace
}  // namespace bitserve::rpc
