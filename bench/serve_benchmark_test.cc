// bench-serve's statistics, workload and report. The driver's tests against a fake backend are in
// serve_driver_test.cc (the same binary).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "bench/serve_metrics.h"
#include "bench/serve_report.h"
#include "bench/serve_workload.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::bench {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// A finished request: sent at `start`, one token-bearing chunk per entry of `chunks` (time, size).
RequestRecord Finished(double start, std::vector<std::pair<double, int>> chunks) {
  RequestRecord r;
  r.sent = r.success = true;
  r.finish_reason = "length";
  r.start_time = start;
  for (auto [t, k] : chunks) {
    r.token_chunk_times.push_back(t);
    r.token_chunk_sizes.push_back(k);
    r.output_tokens += k;
  }
  r.expected_output_tokens = r.output_tokens;
  return r;
}

TEST(PercentileTest, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([4, 1, 3, 2], p): rank p/100 * 3 between sorted neighbours.
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  // 10 values 1..10: p90 at rank 8.1 -> 9.1; p99 at rank 8.91 -> 9.91.
  std::vector<double> ten;
  for (int i = 10; i >= 1; --i) ten.push_back(i);
  EXPECT_DOUBLE_EQ(Percentile(ten, 90), 9.1);
  EXPECT_DOUBLE_EQ(Percentile(ten, 99), 9.91);
  EXPECT_DOUBLE_EQ(Percentile(ten, 50), 5.5);
}

TEST(SummarizeTest, MeanMedianPopulationStdAndScale) {
  const Distribution d = Summarize({0.001, 0.002, 0.003, 0.004}, {50, 90}, 1000);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  EXPECT_NEAR(d.std, std::sqrt(1.25), 1e-12);  // numpy's default ddof = 0
  EXPECT_THAT(d.percentiles,
              ElementsAre(Pair(50, DoubleNear(2.5, 1e-12)), Pair(90, DoubleNear(3.7, 1e-12))));
  const Distribution empty = Summarize({}, {99});
  EXPECT_EQ(empty.mean, 0);
  EXPECT_THAT(empty.percentiles, ElementsAre(Pair(99, 0.0)));
}

TEST(RequestRecordTest, TtftLatencyAndItlPerChunk) {
  const RequestRecord r = Finished(1.0, {{1.5, 1}, {1.75, 1}, {2.0, 1}});
  EXPECT_DOUBLE_EQ(r.ttft(), 0.5);
  EXPECT_DOUBLE_EQ(r.latency(), 1.0);
  EXPECT_THAT(r.itl(), ElementsAre(0.25, 0.25));
  // vLLM's ITL is one gap per chunk: a chunk of 3 tokens adds one entry, not three.
  const RequestRecord multi = Finished(0.0, {{0.5, 1}, {1.25, 3}});
  EXPECT_THAT(multi.itl(), ElementsAre(0.75));
  EXPECT_EQ(multi.output_tokens, 4);
}

TEST(ComputeMetricsTest, HandComputedRun) {
  std::vector<RequestRecord> records;
  // 0: 3 tokens, TTFT 0.5, E2EL 1.0 -> TPOT (1.0 - 0.5) / 2 = 0.25; ITLs 0.25, 0.25.
  records.push_back(Finished(0.0, {{0.5, 1}, {0.75, 1}, {1.0, 1}}));
  records.back().prompt_tokens = 10;
  // 1: 4 tokens in two chunks, TTFT 1.0, E2EL 2.5 -> TPOT 1.5 / 3 = 0.5; one ITL of 1.5.
  records.push_back(Finished(1.0, {{2.0, 1}, {3.5, 3}}));
  records.back().prompt_tokens = 20;
  // 2: one token: TTFT and E2EL 0.5, no TPOT (output_tokens must exceed 1), no ITL.
  records.push_back(Finished(2.0, {{2.5, 1}}));
  records.back().prompt_tokens = 5;
  records.back().expected_output_tokens = 2;  // cut short by the server
  // 3 and 4: failures, counted by code, not in any distribution or throughput.
  RequestRecord failed;
  failed.status = absl::ResourceExhaustedError("queue full");
  records.push_back(failed);
  failed.status = absl::UnavailableError("draining");
  records.push_back(failed);
  for (int i = 0; i < 5; ++i) records[i].index = i;

  const ServeMetrics m = ComputeMetrics(records, 4.0, {50, 99});
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 2);
  EXPECT_THAT(m.failures_by_code,
              ElementsAre(Pair("RESOURCE_EXHAUSTED", 1), Pair("UNAVAILABLE", 1)));
  EXPECT_EQ(m.short_outputs, 1);
  EXPECT_EQ(m.total_input_tokens, 35);
  EXPECT_EQ(m.total_output_tokens, 8);
  EXPECT_DOUBLE_EQ(m.request_throughput, 0.75);
  EXPECT_DOUBLE_EQ(m.output_throughput, 2.0);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 43.0 / 4);
  // TTFT {0.5, 1.0, 0.5} s; TPOT {0.25, 0.5}; ITL {0.25, 0.25, 1.5}; E2EL {1.0, 2.5, 0.5}.
  EXPECT_NEAR(m.ttft_ms.mean, 2000.0 / 3, 1e-9);
  EXPECT_NEAR(m.ttft_ms.median, 500, 1e-9);
  EXPECT_NEAR(m.tpot_ms.mean, 375, 1e-9);
  EXPECT_NEAR(m.tpot_ms.percentiles[1].second, 250 + 250 * 0.99, 1e-9);
  EXPECT_NEAR(m.itl_ms.mean, 2000.0 / 3, 1e-9);
  EXPECT_NEAR(m.itl_ms.median, 250, 1e-9);
  EXPECT_NEAR(m.itl_ms.percentiles[1].second, 250 + 1250 * 0.98, 1e-9);  // rank 1.98
  EXPECT_NEAR(m.e2el_ms.median, 1000, 1e-9);
  EXPECT_NEAR(m.e2el_ms.mean, 4000.0 / 3, 1e-9);
  // Output tokens per one-second bucket since the first send: [0,1): 2 (at 0.5, 0.75), [1,2): 1
  // (1.0), [2,3): 2 (2.0, 2.5), [3,4): 3 (the chunk of three at 3.5).
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 3);
  // Intervals [0,1), [1,3.5), [2,2.5): the first ends as the second starts (half-open), so the
  // peak is 2.
  EXPECT_EQ(m.max_concurrent_requests, 2);
}

TEST(ComputeMetricsTest, AllFailedGivesZeros) {
  RequestRecord failed;
  failed.status = absl::DeadlineExceededError("not sent");
  const ServeMetrics m = ComputeMetrics({failed, failed}, 1.0, {99});
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 2);
  EXPECT_EQ(m.output_throughput, 0);
  EXPECT_EQ(m.ttft_ms.mean, 0);
  EXPECT_EQ(m.max_concurrent_requests, 0);
}

TEST(WorkloadTest, LengthBoundsAsVllm) {
  EXPECT_THAT(*LengthBounds(100, 0.25, 1, "--input-len"), Pair(75, 125));
  EXPECT_THAT(*LengthBounds(10, 0.15, 1, "--input-len"), Pair(8, 12));  // floor 8.5, ceil 11.5
  EXPECT_THAT(*LengthBounds(1, 0.5, 1, "--output-len"), Pair(1, 2));    // low at least 1
  EXPECT_THAT(*LengthBounds(128, 0, 1, "--output-len"), Pair(128, 128));
  EXPECT_THAT(LengthBounds(100, 1.0, 1, "--input-len").status().message(),
              HasSubstr("--input-len-range must be in [0, 1)"));
  EXPECT_FALSE(LengthBounds(100, -0.1, 1, "--input-len").ok());
  EXPECT_THAT(LengthBounds(0, 0, 1, "--output-len").status().message(),
              HasSubstr("--output-len must be >= 1"));
}

RandomWorkloadOptions SmallWorkload(uint64_t seed) {
  RandomWorkloadOptions o;
  o.num_prompts = 2000;
  o.input_len = 40;
  o.output_len = 20;
  o.input_len_range = 0.25;
  o.output_len_range = 0.5;
  o.seed = seed;
  o.vocab_size = 50;
  o.excluded_ids = {3, 49};
  return o;
}

TEST(WorkloadTest, RandomLengthsInRangeIdsInVocabularyFixedOutputLength) {
  absl::StatusOr<std::vector<BenchRequest>> w = MakeRandomWorkload(SmallWorkload(1));
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 2000u);
  std::set<int> input_lens, output_lens;
  for (const BenchRequest& r : *w) {
    const auto& ids = std::get<rpc::TokenInput>(r.input).ids;
    ASSERT_EQ(static_cast<int>(ids.size()), r.prompt_len);
    input_lens.insert(r.prompt_len);
    output_lens.insert(r.expected_output_len);
    for (int32_t id : ids) {
      ASSERT_TRUE(id >= 0 && id < 50 && id != 3 && id != 49) << id;
    }
    EXPECT_TRUE(r.params.ignore_eos);
    EXPECT_EQ(r.params.max_new_tokens, r.expected_output_len);
  }
  // Uniform over [30, 50] and [10, 30]: 2000 draws reach both ends.
  EXPECT_EQ(*input_lens.begin(), 30);
  EXPECT_EQ(*input_lens.rbegin(), 50);
  EXPECT_EQ(*output_lens.begin(), 10);
  EXPECT_EQ(*output_lens.rbegin(), 30);
}

TEST(WorkloadTest, SharedPrefixStartsEveryPrompt) {
  RandomWorkloadOptions o = SmallWorkload(3);
  const std::vector<BenchRequest> plain = *MakeRandomWorkload(o);
  o.prefix_len = 17;
  const std::vector<BenchRequest> shared = *MakeRandomWorkload(o);
  ASSERT_EQ(shared.size(), plain.size());
  const auto& first = std::get<rpc::TokenInput>(shared[0].input).ids;
  for (size_t i = 0; i < shared.size(); ++i) {
    const auto& ids = std::get<rpc::TokenInput>(shared[i].input).ids;
    const auto& own = std::get<rpc::TokenInput>(plain[i].input).ids;
    ASSERT_EQ(ids.size(), own.size() + 17);
    EXPECT_EQ(shared[i].prompt_len, static_cast<int>(ids.size()));
    EXPECT_TRUE(std::equal(first.begin(), first.begin() + 17, ids.begin())) << i;
    // After the prefix, the prompt it has without one.
    EXPECT_TRUE(std::equal(own.begin(), own.end(), ids.begin() + 17)) << i;
  }
  o.prefix_len = -1;
  EXPECT_THAT(MakeRandomWorkload(o).status().message(), HasSubstr("--prefix-len"));
}

TEST(WorkloadTest, DeterministicForASeed) {
  auto ids = [](uint64_t seed) {
    std::vector<std::vector<int32_t>> out;
    const std::vector<BenchRequest> workload = *MakeRandomWorkload(SmallWorkload(seed));
    for (const BenchRequest& r : workload) {
      out.push_back(std::get<rpc::TokenInput>(r.input).ids);
      out.back().push_back(-r.expected_output_len);
    }
    return out;
  };
  EXPECT_EQ(ids(7), ids(7));
  EXPECT_NE(ids(7), ids(8));
  EXPECT_EQ(*ArrivalTimes(50, 3.0, 1.0, 7), *ArrivalTimes(50, 3.0, 1.0, 7));
  EXPECT_NE(*ArrivalTimes(50, 3.0, 1.0, 7), *ArrivalTimes(50, 3.0, 1.0, 8));
}

TEST(WorkloadTest, BadOptionsAreNamed) {
  RandomWorkloadOptions o = SmallWorkload(0);
  o.num_prompts = 0;
  EXPECT_THAT(MakeRandomWorkload(o).status().message(), HasSubstr("--num-prompts"));
  o = SmallWorkload(0);
  o.output_len_range = 1.5;
  EXPECT_THAT(MakeRandomWorkload(o).status().message(), HasSubstr("--output-len-range"));
  EXPECT_THAT(ArrivalTimes(5, 0, 1, 0).status().message(), HasSubstr("--request-rate"));
  EXPECT_THAT(ArrivalTimes(5, 1, 0, 0).status().message(), HasSubstr("--burstiness"));
}

// Mean and coefficient of variation of many gaps: the mean is 1/rate, and the spread tells the
// distribution (exponential: cv 1; gamma of shape b: cv 1/sqrt(b)).
void ExpectGaps(double rate, double burstiness, double expected_cv) {
  const std::vector<double> gaps = ArrivalGaps(200000, rate, burstiness, 11);
  double sum = 0, squares = 0;
  for (double g : gaps) {
    ASSERT_GE(g, 0);
    sum += g;
  }
  const double mean = sum / gaps.size();
  for (double g : gaps) squares += (g - mean) * (g - mean);
  const double cv = std::sqrt(squares / gaps.size()) / mean;
  // Standard error of the mean is cv / sqrt(n) ~ 0.2%: 1% is five of them.
  EXPECT_NEAR(mean * rate, 1.0, 0.01) << "rate " << rate << " burstiness " << burstiness;
  EXPECT_NEAR(cv, expected_cv, 0.02) << "rate " << rate << " burstiness " << burstiness;
}

TEST(WorkloadTest, PoissonGapsHaveTheRateAsMean) {
  ExpectGaps(4.0, 1.0, 1.0);
  ExpectGaps(0.5, 1.0, 1.0);
  ExpectGaps(4.0, 4.0, 0.5);
  EXPECT_THAT(ArrivalGaps(3, 2.0, std::numeric_limits<double>::infinity(), 0),
              ElementsAre(0.5, 0.5, 0.5));
}

TEST(WorkloadTest, ArrivalTimesAscendAndEndAtNOverRate) {
  const std::vector<double> t = *ArrivalTimes(100, 5.0, 1.0, 3);
  ASSERT_EQ(t.size(), 100u);
  EXPECT_GT(t.front(), 0);  // as vLLM, the first request also waits one gap
  for (size_t i = 1; i < t.size(); ++i) EXPECT_GE(t[i], t[i - 1]);
  EXPECT_NEAR(t.back(), 100 / 5.0, 1e-9);
  EXPECT_THAT(*ArrivalTimes(3, std::numeric_limits<double>::infinity(), 1.0, 3),
              ElementsAre(0, 0, 0));
}

class JsonlWorkloadTest : public ::testing::Test {
 protected:
  std::filesystem::path Write(const std::string& text) {
    const std::filesystem::path path =
        std::filesystem::path(::testing::TempDir()) /
        (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".jsonl");
    std::ofstream(path) << text;
    return path;
  }
};

TEST_F(JsonlWorkloadTest, PromptsWithoutIdsCycledWithDrawnOutputLengths) {
  const auto path = Write(
      "{\"prompt\": \"To be\"}\n\n{\"id\": \"x\", \"prompt_ids\": [1, 2, 3], \"max_tokens\": 7}\n");
  absl::StatusOr<std::vector<BenchRequest>> w = LoadJsonlWorkload(path, 5, 20, 0.5, 1);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const BenchRequest& r = (*w)[i];
    EXPECT_TRUE(r.params.ignore_eos);
    EXPECT_EQ(r.params.max_new_tokens, r.expected_output_len);
    if (i % 2 == 0) {
      EXPECT_EQ(std::get<rpc::TextInput>(r.input).text, "To be");
      EXPECT_EQ(r.prompt_len, 0);  // the server counts text prompts
      EXPECT_GE(r.expected_output_len, 10);
      EXPECT_LE(r.expected_output_len, 30);
    } else {
      EXPECT_EQ(r.prompt_len, 3);
      EXPECT_EQ(r.expected_output_len, 7);  // the line's own max_tokens
    }
  }
  EXPECT_EQ(LoadJsonlWorkload(path, 0, 20, 0, 1)->size(), 2u);  // 0: every line once
}

TEST_F(JsonlWorkloadTest, ErrorsNameFileAndLine) {
  const auto path = Write("{\"prompt\": \"a\"}\n{\"prompt\": 5}\n");
  EXPECT_THAT(LoadJsonlWorkload(path, 0, 20, 0, 1).status().message(),
              HasSubstr(path.string() + ":2: \"prompt\": expected a string"));
  EXPECT_THAT(LoadJsonlWorkload(Write("not json\n"), 0, 20, 0, 1).status().message(),
              HasSubstr(":1: not valid JSON"));
  EXPECT_THAT(LoadJsonlWorkload(Write(""), 0, 20, 0, 1).status().message(),
              HasSubstr("no requests"));
  EXPECT_FALSE(LoadJsonlWorkload("/nonexistent/x.jsonl", 0, 20, 0, 1).ok());
}

TEST(ReportTest, VllmLayoutAndJsonKeys) {
  std::vector<RequestRecord> records = {Finished(0.0, {{0.5, 1}, {0.75, 1}})};
  RequestRecord failed;
  failed.index = 1;
  failed.status = absl::ResourceExhaustedError("queue full");
  records.push_back(failed);
  const ServeMetrics m = ComputeMetrics(records, 2.0, {50, 90, 99});
  ReportContext context;
  context.max_concurrency = 4;
  context.request_rate = std::numeric_limits<double>::infinity();
  const std::string text = FormatReport(m, records, context);
  EXPECT_THAT(text, HasSubstr("============ Serving Benchmark Result ============\n"));
  EXPECT_THAT(text, HasSubstr("---------------Time to First Token----------------\n"));
  EXPECT_THAT(text, HasSubstr("-----Time per Output Token (excl. 1st token)------\n"));
  EXPECT_THAT(text, HasSubstr("Successful requests:                     1         \n"));
  EXPECT_THAT(text, HasSubstr("Maximum request concurrency:             4"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("Request rate configured")));
  EXPECT_THAT(text, HasSubstr("Mean TTFT (ms):                          500.00"));
  EXPECT_THAT(text, HasSubstr("P90 ITL (ms):"));
  EXPECT_THAT(text, HasSubstr("RESOURCE_EXHAUSTED 1"));
  EXPECT_THAT(text, HasSubstr("request 1: RESOURCE_EXHAUSTED: queue full"));

  const nlohmann::ordered_json j = ReportJson(m, records, context, {{"seed", 3}});
  EXPECT_EQ(j["parameters"]["seed"], 3);
  EXPECT_EQ(j["completed"], 1);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_DOUBLE_EQ(j["mean_ttft_ms"].get<double>(), 500);
  EXPECT_DOUBLE_EQ(j["p99_itl_ms"].get<double>(), 250);
  EXPECT_DOUBLE_EQ(j["median_tpot_ms"].get<double>(), 250);
  for (const char* key : {"p50_e2el_ms", "std_ttft_ms", "output_throughput", "ttfts", "itls",
                          "latencies", "errors", "max_concurrent_requests"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["output_lens"], nlohmann::json({2, 0}));
  EXPECT_EQ(j["errors"][1], "RESOURCE_EXHAUSTED: queue full");
}

}  // namespace
}  // namespace bitserve::bench
