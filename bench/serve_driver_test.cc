// The bench-serve driver against a fake GenerationBackend that streams tokens from its own
// threads with small delays. Checks are about accounting and ordering, never about speed.
#include "bench/serve_driver.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::bench {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// Streams max_new_tokens tokens per request, tokens_per_chunk at a time, one chunk per `delay`,
// the last chunk being the final one (as the coordinator does). Submissions numbered from 0 in
// `reject` fail synchronously, those in `fail` end with an "error" final chunk after one chunk.
class FakeBackend : public rpc::GenerationBackend {
 public:
  struct Options {
    int tokens_per_chunk = 1;
    std::chrono::microseconds delay{300};
    std::set<int> reject, fail;
  };
  explicit FakeBackend(Options options) : options_(std::move(options)) {}
  ~FakeBackend() override {
    for (std::thread& t : threads_) t.join();
  }

  absl::StatusOr<uint64_t> Submit(rpc::GenerationInput input, rpc::GenerationParams params,
                                  rpc::ChunkCallback on_chunk) override {
    std::lock_guard<std::mutex> lock(mu_);
    const int index = submitted_++;
    if (options_.reject.contains(index)) return absl::ResourceExhaustedError("queue full");
    const int active = ++active_;
    max_active_ = std::max(max_active_, active);
    const int prompt = static_cast<int>(std::get<rpc::TokenInput>(input).ids.size());
    const bool fail = options_.fail.contains(index);
    const uint64_t id = index + 1;
    threads_.emplace_back([this, id, prompt, fail, params, cb = std::move(on_chunk)] {
      Stream(id, prompt, fail, params, cb);
    });
    return id;
  }
  void Cancel(uint64_t id, const absl::Status& why) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(id);
  }
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string&, bool) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<rpc::ModelSummary> Info() override { return rpc::ModelSummary{}; }

  int submitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }
  int max_active() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_active_;
  }

 private:
  void Stream(uint64_t id, int prompt, bool fail, const rpc::GenerationParams& params,
              const rpc::ChunkCallback& cb) {
    int sent = 0;
    while (true) {
      std::this_thread::sleep_for(options_.delay);
      bool cancelled;
      {
        std::lock_guard<std::mutex> lock(mu_);
        cancelled = cancelled_.contains(id);
      }
      rpc::GenerationChunk chunk;
      if (cancelled) {
        chunk.finish_reason = "cancelled";
      } else if (fail && sent > 0) {
        chunk.finish_reason = "error";
        chunk.status = absl::UnavailableError("worker lost");
      } else {
        const int k = std::min(options_.tokens_per_chunk, params.max_new_tokens - sent);
        chunk.token_ids.assign(k, 7);
        sent += k;
        if (sent == params.max_new_tokens) chunk.finish_reason = "length";
      }
      const bool final = !chunk.finish_reason.empty();
      chunk.final = final;
      chunk.usage = {prompt, sent};
      if (final) {
        std::lock_guard<std::mutex> lock(mu_);
        --active_;  // before the callback: the driver may send the next request from it
      }
      cb(std::move(chunk));
      if (final) return;
    }
  }

  Options options_;
  mutable std::mutex mu_;
  int submitted_ = 0, active_ = 0, max_active_ = 0;
  std::set<uint64_t> cancelled_;
  std::vector<std::thread> threads_;
};

std::vector<BenchRequest> Workload(int n, int output_len) {
  RandomWorkloadOptions o;
  o.num_prompts = n;
  o.input_len = 8;
  o.output_len = output_len;
  o.input_len_range = 0.5;
  o.vocab_size = 100;
  o.seed = 5;
  return *MakeRandomWorkload(o);
}

TEST(DriverTest, ConcurrencyNeverExceededAndEveryRequestCompletes) {
  for (int concurrency : {1, 3}) {
    FakeBackend backend({});
    const std::vector<BenchRequest> requests = Workload(24, 5);
    DriverOptions options;
    options.max_concurrency = concurrency;
    absl::StatusOr<DriverResult> result = RunServeBenchmark(backend, requests, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LE(backend.max_active(), concurrency);
    EXPECT_EQ(backend.submitted(), 24);
    ASSERT_EQ(result->records.size(), 24u);
    const ServeMetrics m = ComputeMetrics(result->records, result->duration_s, {99});
    EXPECT_EQ(m.completed, 24);
    EXPECT_EQ(m.failed, 0);
    EXPECT_LE(m.max_concurrent_requests, concurrency);
    EXPECT_EQ(m.total_output_tokens, 24 * 5);
    int input = 0;
    for (int i = 0; i < 24; ++i) {
      const RequestRecord& r = result->records[i];
      EXPECT_EQ(r.index, i);
      EXPECT_EQ(r.finish_reason, "length");
      EXPECT_EQ(r.output_tokens, 5);
      EXPECT_EQ(r.token_chunk_times.size(), 5u);
      EXPECT_EQ(r.itl().size(), 4u);
      EXPECT_GT(r.ttft(), 0);
      EXPECT_LE(r.ttft(), r.latency());
      EXPECT_LE(r.latency() + r.start_time, result->duration_s);
      input += requests[i].prompt_len;
    }
    EXPECT_EQ(m.total_input_tokens, input);
  }
}

TEST(DriverTest, FailuresAreCountedWithTheirCodes) {
  FakeBackend::Options fake;
  fake.reject = {2, 9};
  fake.fail = {5};
  FakeBackend backend(fake);
  DriverOptions options;
  options.max_concurrency = 4;
  absl::StatusOr<DriverResult> result = RunServeBenchmark(backend, Workload(12, 4), options);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->records.size(), 12u);
  const ServeMetrics m = ComputeMetrics(result->records, result->duration_s, {99});
  EXPECT_EQ(m.completed, 9);
  EXPECT_EQ(m.failed, 3);
  EXPECT_THAT(m.failures_by_code,
              ElementsAre(Pair("RESOURCE_EXHAUSTED", 2), Pair("UNAVAILABLE", 1)));
  EXPECT_EQ(result->records[2].finish_reason, "rejected");
  EXPECT_EQ(result->records[5].finish_reason, "error");
  EXPECT_FALSE(result->records[5].success);
}

TEST(DriverTest, MultiTokenChunksGiveOneItlPerChunk) {
  FakeBackend::Options fake;
  fake.tokens_per_chunk = 3;
  FakeBackend backend(fake);
  absl::StatusOr<DriverResult> result = RunServeBenchmark(backend, Workload(4, 10), {});
  ASSERT_TRUE(result.ok()) << result.status();
  for (const RequestRecord& r : result->records) {
    EXPECT_THAT(r.token_chunk_sizes, ElementsAre(3, 3, 3, 1));
    EXPECT_EQ(r.output_tokens, 10);
    EXPECT_EQ(r.itl().size(), 3u);  // vLLM: per chunk, not per token
  }
}

TEST(DriverTest, ArrivalsFollowTheSeededScheduleAndWarmupIsNotCounted) {
  FakeBackend backend({});
  DriverOptions options;
  options.request_rate = 400;
  options.seed = 3;
  options.num_warmups = 3;
  absl::StatusOr<DriverResult> result = RunServeBenchmark(backend, Workload(10, 2), options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(backend.submitted(), 13);
  EXPECT_EQ(result->warmup_failed, 0);
  ASSERT_EQ(result->records.size(), 10u);
  const std::vector<double> arrivals = *ArrivalTimes(10, 400, 1.0, 3);
  for (int i = 0; i < 10; ++i) {
    EXPECT_DOUBLE_EQ(result->records[i].arrival_time, arrivals[i]);
    EXPECT_GE(result->records[i].start_time, arrivals[i]);  // never sent before it is due
    EXPECT_TRUE(result->records[i].success);
  }
}

TEST(DriverTest, TimeoutCancelsWhatIsInFlightAndCountsWhatWasNotSent) {
  // Each request would stream for ~100 s; the run stops after 0.2 s.
  FakeBackend::Options fake;
  fake.delay = std::chrono::milliseconds(50);
  FakeBackend backend(fake);
  DriverOptions options;
  options.max_concurrency = 2;
  options.timeout_s = 0.2;
  absl::StatusOr<DriverResult> result = RunServeBenchmark(backend, Workload(6, 2000), options);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->records.size(), 6u);
  const ServeMetrics m = ComputeMetrics(result->records, result->duration_s, {99});
  EXPECT_EQ(m.completed, 0);
  EXPECT_THAT(m.failures_by_code, ElementsAre(Pair("DEADLINE_EXCEEDED", 6)));
  EXPECT_TRUE(result->records[0].sent);
  EXPECT_FALSE(result->records[5].sent);
}

TEST(DriverTest, BadOptions) {
  FakeBackend backend({});
  DriverOptions options;
  options.max_concurrency = -1;
  EXPECT_FALSE(RunServeBenchmark(backend, Workload(2, 2), options).ok());
  EXPECT_FALSE(RunServeBenchmark(backend, {}, {}).ok());
  options = {};
  options.request_rate = -2;
  EXPECT_FALSE(RunServeBenchmark(backend, Workload(2, 2), options).ok());
}

}  // namespace
}  // namespace bitserve::bench
