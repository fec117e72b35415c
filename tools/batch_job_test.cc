#include "tools/batch_job.h"

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <queue>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/batch_records.h"

namespace bitserve::cli {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A GenerationBackend that answers from its own thread. A request's "work" is given by its input:
//   prompt_ids [d, ...]: finishes d milliseconds after submission; generates the ids reversed.
//   prompt "text":       finishes at once; generates "text" back as one token per byte.
//   prompt "fail":       finishes with finish_reason "error", UNAVAILABLE, after some tokens.
//   prompt "reject":     Submit answers INVALID_ARGUMENT.
//   prompt "huge":       Submit answers RESOURCE_EXHAUSTED for a prompt beyond the KV capacity.
// Beyond `capacity` requests at once, Submit answers RESOURCE_EXHAUSTED "queue full". With
// refuse_in_final_, refusals (queue full, always_unavailable_, the first unavailable_finals_
// requests) come instead as a final chunk without tokens, as from a remote server.
class FakeBackend : public rpc::GenerationBackend {
 public:
  explicit FakeBackend(int capacity = 1000) : capacity_(capacity) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeBackend() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  absl::StatusOr<uint64_t> Submit(rpc::GenerationInput input, rpc::GenerationParams params,
                                  rpc::ChunkCallback on_chunk) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++submit_calls_;
    Job job;
    if (always_unavailable_) {
      if (!refuse_in_final_) return absl::UnavailableError("server is draining");
      job.refusal = absl::UnavailableError("server is draining");
    } else if (unavailable_finals_ > 0) {
      --unavailable_finals_;
      job.refusal = absl::UnavailableError("connection reset");
    }
    job.request_id = params.request_id;
    job.params = params;
    job.on_chunk = std::move(on_chunk);
    job.due = std::chrono::steady_clock::now();
    if (auto* text = std::get_if<rpc::TextInput>(&input)) {
      if (text->text == "reject") return absl::InvalidArgumentError("temperature is bad");
      if (text->text == "huge") {
        return absl::ResourceExhaustedError("prompt of 9999 tokens exceeds the KV capacity (512)");
      }
      job.fail = text->text == "fail";
      if (fail_first_ > 0) {
        --fail_first_;
        job.fail = true;
      }
      for (unsigned char c : text->text) job.tokens.push_back(c);
      job.prompt_tokens = static_cast<int>(text->text.size());
    } else if (auto* chat = std::get_if<rpc::ChatInput>(&input)) {
      for (const ChatMessage& m : chat->messages) {
        for (unsigned char c : m.content) job.tokens.push_back(c);
      }
      job.prompt_tokens = static_cast<int>(job.tokens.size());
    } else {
      const auto& ids = std::get<rpc::TokenInput>(input).ids;
      job.due += std::chrono::milliseconds(ids[0]);
      job.tokens.assign(ids.rbegin(), ids.rend());
      job.prompt_tokens = static_cast<int>(ids.size());
    }
    if (job.refusal.ok() && accepted_ >= capacity_) {
      ++queue_full_;
      absl::Status full = absl::ResourceExhaustedError("queue full: 3 waiting, limit 3");
      if (!refuse_in_final_) return full;
      job.refusal = full;
    }
    if (!job.refusal.ok()) job.due = std::chrono::steady_clock::now();
    const uint64_t id = next_id_++;
    const bool refused = !job.refusal.ok();
    jobs_.emplace(id, std::move(job));
    if (!refused) ++accepted_;
    max_concurrent_ = std::max<int>(max_concurrent_, accepted_);
    cv_.notify_all();
    return id;
  }
  void Cancel(uint64_t id, const absl::Status& why) override {}
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string&, bool) override {
    return std::vector<int32_t>();
  }
  absl::StatusOr<rpc::ModelSummary> Info() override {
    if (info_error_) return absl::UnavailableError("connection refused");
    rpc::ModelSummary s;
    s.max_num_seqs = 4;
    s.max_waiting = 4;
    return s;
  }

  std::vector<std::string> completion_order() {
    std::lock_guard<std::mutex> lock(mu_);
    return completion_order_;
  }
  int submit_calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return submit_calls_;
  }
  int max_concurrent() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_concurrent_;
  }
  int queue_full() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_full_;
  }
  bool info_error_ = false;
  int fail_first_ = 0;  // this many accepted requests fail as "fail" does, whatever their prompt
  bool always_unavailable_ = false;
  bool refuse_in_final_ = false;
  int unavailable_finals_ = 0;

 private:
  struct Job {
    std::string request_id;
    rpc::GenerationParams params;
    rpc::ChunkCallback on_chunk;
    std::chrono::steady_clock::time_point due;
    std::vector<int32_t> tokens;
    int prompt_tokens = 0;
    bool fail = false;
    absl::Status refusal;  // non-OK: a final chunk with this status and no tokens
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      // The due job (earliest first); ties in submission order.
      auto next = jobs_.end();
      for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
        if (next == jobs_.end() || it->second.due < next->second.due) next = it;
      }
      if (next == jobs_.end()) {
        cv_.wait(lock);
        continue;
      }
      if (next->second.due > std::chrono::steady_clock::now()) {
        cv_.wait_until(lock, next->second.due);
        continue;
      }
      Job job = std::move(next->second);
      jobs_.erase(next);
      if (job.refusal.ok()) {
        --accepted_;
        completion_order_.push_back(job.request_id);
      }
      lock.unlock();
      Run(job);
      lock.lock();
    }
  }

  static void Run(Job& job) {
    if (!job.refusal.ok()) {
      rpc::GenerationChunk refused;
      refused.final = true;
      refused.finish_reason = "error";
      refused.status = job.refusal;
      job.on_chunk(std::move(refused));
      return;
    }
    // Two chunks: all tokens but the last, then the last with the final message.
    const size_t n = std::min(job.tokens.size(), size_t(job.params.max_new_tokens));
    rpc::GenerationChunk first, last;
    for (size_t i = 0; i < n; ++i) {
      rpc::GenerationChunk& chunk = i + 1 < n ? first : last;
      chunk.token_ids.push_back(job.tokens[i]);
      chunk.text += std::to_string(job.tokens[i]) + " ";
      if (job.params.logprobs) {
        SampleResult s;
        s.token = job.tokens[i];
        s.logprob = -0.5f;
        for (int k = 0; k < job.params.sampling.top_logprobs; ++k)
          s.top_logprobs.push_back({k, -1.0f});
        chunk.logprobs.push_back(s);
      }
    }
    if (!first.token_ids.empty()) job.on_chunk(std::move(first));
    last.final = true;
    last.finish_reason = job.fail ? "error" : n < job.tokens.size() ? "length" : "eos";
    if (job.fail) last.status = absl::UnavailableError("worker 0 lost");
    last.usage = {job.prompt_tokens, static_cast<int>(n)};
    last.seed = 77;
    job.on_chunk(std::move(last));
  }

  const int capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Job> jobs_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  int submit_calls_ = 0, max_concurrent_ = 0, queue_full_ = 0, accepted_ = 0;
  std::vector<std::string> completion_order_;
  std::thread thread_;
};

class BatchJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("batch_job_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    options_.input = dir_ / "in.jsonl";
    options_.output = dir_ / "out.jsonl";
    options_.log = &log_;
    options_.retry_backoff_min = std::chrono::milliseconds(1);
    options_.retry_backoff_max = std::chrono::milliseconds(5);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteFile(const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }
  std::string ReadFile(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // The output's records in file order.
  std::vector<json> Records() {
    std::vector<json> records;
    const std::string text = ReadFile(options_.output);
    EXPECT_TRUE(text.empty() || text.back() == '\n');
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      records.push_back(json::parse(line));
    }
    return records;
  }
  std::map<std::string, json> ById() {
    std::map<std::string, json> by_id;
    for (const json& r : Records()) {
      EXPECT_FALSE(by_id.count(r["id"].dump())) << "two records for " << r["id"];
      by_id[r["id"].dump()] = r;
    }
    return by_id;
  }

  std::filesystem::path dir_;
  std::ostringstream log_;
  BatchJobOptions options_;
};

TEST_F(BatchJobTest, RunsEveryKindOfInput) {
  WriteFile(options_.input,
            "{\"id\": \"a\", \"prompt\": \"hi\"}\n"
            "\n"
            "{\"id\": 7, \"prompt_ids\": [0, 5, 6], \"max_tokens\": 2}\r\n"
            "{\"id\": \"c\", \"messages\": [{\"role\": \"user\", \"content\": \"yo\"}], "
            "\"logprobs\": 2, \"temperature\": 0.5, \"seed\": 3}\n"
            "{\"id\": \"7\", \"prompt_ids\": [1]}");  // no final newline; "7" is not 7
  FakeBackend backend;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->counts.total, 4);
  EXPECT_EQ(summary->counts.completed, 4);
  EXPECT_EQ(summary->counts.failed, 0);
  EXPECT_EQ(summary->counts.generated_tokens, 2 + 2 + 2 + 1);
  EXPECT_EQ(summary->counts.prompt_tokens, 2 + 3 + 2 + 1);
  EXPECT_EQ(summary->max_in_flight, 8);  // the fake's max_num_seqs + max_waiting
  // Fields in the documented order, id first.
  for (absl::string_view line :
       absl::StrSplit(ReadFile(options_.output), '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "{\"id\":")) << line;
    EXPECT_THAT(std::string(line), HasSubstr(",\"text\":")) << line;
  }
  auto by_id = ById();
  ASSERT_EQ(by_id.size(), 4u);
  EXPECT_EQ(by_id["\"a\""], json::parse(R"({"id": "a", "text": "104 105 ", "token_ids": [104, 105],
      "finish_reason": "eos", "usage": {"prompt_tokens": 2, "completion_tokens": 2}})"));
  EXPECT_EQ(by_id["7"]["token_ids"], json::parse("[6, 5]"));
  EXPECT_EQ(by_id["7"]["finish_reason"], "length");
  EXPECT_EQ(by_id["7"]["id"], 7);
  EXPECT_EQ(by_id["\"7\""]["id"], "7");
  const json& c = by_id["\"c\""];
  EXPECT_EQ(c["seed"], 77);
  ASSERT_EQ(c["logprobs"].size(), 2u);
  EXPECT_EQ(c["logprobs"][0], json::parse(R"({"token_id": 121, "logprob": -0.5,
      "top": [{"token_id": 0, "logprob": -1.0}, {"token_id": 1, "logprob": -1.0}]})"));
  EXPECT_THAT(log_.str(), HasSubstr("bitserve batch: 4 lines: 4 done, 0 errors"));
}

TEST_F(BatchJobTest, WritesInCompletionOrder) {
  // Later lines finish first: the output follows completion, not the input.
  std::string input;
  for (int i = 0; i < 6; ++i) {
    absl::StrAppend(&input, "{\"id\": ", i, ", \"prompt_ids\": [", 60 - 10 * i, "]}\n");
  }
  WriteFile(options_.input, input);
  FakeBackend backend;
  ASSERT_TRUE(RunBatchJob(backend, options_).ok());
  std::vector<std::string> written;
  for (const json& r : Records()) written.push_back(r["id"].dump());
  EXPECT_THAT(written, ElementsAre("5", "4", "3", "2", "1", "0"));
  EXPECT_EQ(written, backend.completion_order());
}

TEST_F(BatchJobTest, ResumesSkippingDoneIdsAndCuttingATornLine) {
  WriteFile(options_.input,
            "{\"id\": \"a\", \"prompt\": \"aa\"}\n"
            "{\"id\": \"b\", \"prompt\": \"bb\"}\n"
            "{\"id\": \"c\", \"prompt\": \"cc\"}\n"
            "{\"id\": \"d\", \"prompt\": \"dd\"}\n"
            "{\"id\": \"e\", \"prompt\": \"ee\"}\n");
  // An earlier run: a finished, an error for b (retryable: to redo), c cancelled (to redo), and d
  // torn in the middle of its write.
  const std::string earlier =
      "{\"id\":\"a\",\"text\":\"old\",\"token_ids\":[1],\"finish_reason\":\"eos\","
      "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n"
      "{\"id\":\"b\",\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"x\"},"
      "\"finish_reason\":\"error\"}\n"
      "{\"id\":\"c\",\"text\":\"\",\"token_ids\":[],\"finish_reason\":\"cancelled\","
      "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":0}}\n";
  const std::string torn = "{\"id\":\"d\",\"text\":\"hal";
  WriteFile(options_.output, earlier + torn);
  FakeBackend backend;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->counts.skipped, 1);
  EXPECT_EQ(summary->counts.completed, 4);
  EXPECT_EQ(backend.submit_calls(), 4);
  EXPECT_THAT(log_.str(), HasSubstr(absl::StrCat("torn last line (", torn.size(), " bytes)")));
  const std::string text = ReadFile(options_.output);
  const std::string a_record = earlier.substr(0, earlier.find('\n') + 1);
  ASSERT_EQ(text.substr(0, a_record.size()), a_record) << "a finished record stays as it was";
  EXPECT_THAT(log_.str(), HasSubstr("removed 2 records of earlier runs"));
  // One record per id: b's error and c's cancelled result were replaced.
  std::vector<json> records = Records();
  ASSERT_EQ(records.size(), 5u);
  std::set<std::string> finished;
  for (const json& r : records) {
    EXPECT_TRUE(IsFinishedRecord(r)) << r;
    EXPECT_TRUE(finished.insert(r["id"]).second) << r;
  }
  EXPECT_EQ(finished, (std::set<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(records[0]["text"], "old");

  // A third run has nothing left to do.
  log_.str("");
  FakeBackend idle;
  summary = RunBatchJob(idle, options_);
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(idle.submit_calls(), 0);
  EXPECT_EQ(summary->counts.skipped, 5);
  EXPECT_EQ(ReadFile(options_.output), text);
}

TEST_F(BatchJobTest, MalformedLinesAreReportedAndDoNotStopTheJob) {
  WriteFile(options_.input,
            "{\"id\": \"ok1\", \"prompt\": \"x\"}\n"                        // 1
            "{\"id\": \"bad-json\", \"prompt\": \n"                         // 2: no id recoverable
            "{\"prompt\": \"no id\"}\n"                                     // 3
            "{\"id\": \"both\", \"prompt\": \"x\", \"messages\": []}\n"     // 4
            "{\"id\": \"type\", \"prompt\": 5}\n"                           // 5
            "{\"id\": \"unknown\", \"prompt\": \"x\", \"max_token\": 3}\n"  // 6
            "{\"id\": \"ok1\", \"prompt\": \"again\"}\n"                    // 7: duplicate
            "[1, 2]\n"                                                      // 8
            "{\"id\": [1], \"prompt\": \"x\"}\n"                            // 9
            "{\"id\": \"temp\", \"prompt\": \"x\", \"temperature\": -1}\n"  // 10
            "{\"id\": \"ok2\", \"prompt_ids\": [0, 1]}\n");                 // 11
  FakeBackend backend;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  const std::string log = log_.str();
  const std::string in = options_.input.string();
  EXPECT_THAT(log, HasSubstr(in + ":2: not valid JSON"));
  EXPECT_THAT(log, HasSubstr(in + ":3: \"id\" is missing"));
  EXPECT_THAT(log, HasSubstr(in + ":4: give only one of \"prompt\", \"messages\""));
  EXPECT_THAT(log, HasSubstr(in + ":5: \"prompt\": expected a string, got 5"));
  EXPECT_THAT(log, HasSubstr(in + ":6: unknown field \"max_token\""));
  EXPECT_THAT(log, HasSubstr(in + ":7: duplicate id \"ok1\" (first on line 1)"));
  EXPECT_THAT(log, HasSubstr(in + ":8: expected a JSON object, got [1,2]"));
  EXPECT_THAT(log, HasSubstr(in + ":9: \"id\": expected a non-empty string or a number"));
  EXPECT_THAT(log, HasSubstr(in + ":10: temperature"));
  EXPECT_EQ(summary->counts.malformed, 8);
  EXPECT_EQ(summary->counts.duplicates, 1);
  EXPECT_EQ(summary->counts.completed, 2);
  EXPECT_EQ(summary->counts.failed, 0);
  auto by_id = ById();
  EXPECT_EQ(by_id.size(), 6u);
  for (const char* id : {"both", "type", "unknown", "temp"}) {
    const json& r = by_id[json(id).dump()];
    EXPECT_EQ(r["finish_reason"], "error") << id;
    EXPECT_EQ(r["error"]["code"], "INVALID_ARGUMENT") << id;
  }
  EXPECT_EQ(by_id["\"ok1\""]["token_ids"], json::parse("[120]"));  // the first line, not the dup
  EXPECT_THAT(log, HasSubstr("2 done, 0 errors, 8 malformed lines, 1 duplicate ids not run"));

  // Again: nothing runs, and the error records of malformed lines are not written twice.
  const std::string before = ReadFile(options_.output);
  FakeBackend again;
  summary = RunBatchJob(again, options_);
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(again.submit_calls(), 0);
  EXPECT_EQ(summary->counts.malformed, 8);
  EXPECT_EQ(ReadFile(options_.output), before);
}

TEST_F(BatchJobTest, QueueFullIsRetriedNotFailed) {
  std::string input;
  for (int i = 0; i < 40; ++i) absl::StrAppend(&input, "{\"id\": ", i, ", \"prompt_ids\": [2]}\n");
  WriteFile(options_.input, input);
  options_.max_in_flight = 10;
  FakeBackend backend(/*capacity=*/3);
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->counts.completed, 40);
  EXPECT_EQ(summary->counts.failed, 0);
  EXPECT_GT(backend.queue_full(), 0);
  EXPECT_EQ(summary->retries, backend.queue_full());
  EXPECT_LE(backend.max_concurrent(), 3);
  EXPECT_EQ(ById().size(), 40u);
}

TEST_F(BatchJobTest, QueueFullInTheFinalChunkIsRetriedToo) {
  std::string input;
  for (int i = 0; i < 40; ++i) absl::StrAppend(&input, "{\"id\": ", i, ", \"prompt_ids\": [2]}\n");
  WriteFile(options_.input, input);
  options_.max_in_flight = 10;
  FakeBackend backend(/*capacity=*/3);
  backend.refuse_in_final_ = true;
  backend.unavailable_finals_ = 5;  // and a connection that drops a few times
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->counts.completed, 40);
  EXPECT_EQ(summary->counts.failed, 0);
  EXPECT_GT(backend.queue_full(), 0);
  EXPECT_EQ(summary->retries, backend.queue_full() + 5);
  EXPECT_LE(backend.max_concurrent(), 3);
  auto by_id = ById();
  EXPECT_EQ(by_id.size(), 40u);
  for (const auto& [id, r] : by_id) EXPECT_EQ(r["finish_reason"], "eos") << id;
}

TEST_F(BatchJobTest, MaxInFlightIsRespected) {
  std::string input;
  for (int i = 0; i < 30; ++i) absl::StrAppend(&input, "{\"id\": ", i, ", \"prompt_ids\": [3]}\n");
  WriteFile(options_.input, input);
  options_.max_in_flight = 5;
  FakeBackend backend;
  ASSERT_TRUE(RunBatchJob(backend, options_).ok());
  EXPECT_EQ(backend.max_concurrent(), 5);
  EXPECT_EQ(backend.queue_full(), 0);
}

TEST_F(BatchJobTest, RequestErrorsBecomeErrorRecords) {
  WriteFile(options_.input,
            "{\"id\": \"r\", \"prompt\": \"reject\"}\n"
            "{\"id\": \"h\", \"prompt\": \"huge\"}\n"
            "{\"id\": \"f\", \"prompt\": \"fail\"}\n"
            "{\"id\": \"g\", \"prompt\": \"good\"}\n");
  FakeBackend backend;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->counts.failed, 3);
  EXPECT_EQ(summary->counts.retry_later, 1) << "f's error is retryable";
  EXPECT_EQ(summary->counts.completed, 1);
  // r and h fail the same way on every try: once each. f (a worker lost mid-request) is tried
  // max_attempts times.
  EXPECT_EQ(backend.submit_calls(), 3 + options_.max_attempts);
  auto by_id = ById();
  EXPECT_EQ(by_id["\"r\""], json::parse(absl::StrCat(
                                R"({"id": "r", "finish_reason": "error",
      "error": {"code": "INVALID_ARGUMENT", "message": "temperature is bad", "retryable": false,
                "input_hash": ")",
                                InputHash("{\"id\": \"r\", \"prompt\": \"reject\"}"), R"("}})")));
  EXPECT_EQ(by_id["\"h\""]["error"]["code"], "RESOURCE_EXHAUSTED");
  EXPECT_EQ(by_id["\"h\""]["error"]["retryable"], false);
  EXPECT_EQ(by_id["\"f\""]["error"], json::parse(R"({"code": "UNAVAILABLE",
      "message": "worker 0 lost", "retryable": true})"));
  EXPECT_EQ(by_id["\"g\""]["finish_reason"], "eos");
  EXPECT_THAT(log_.str(),
              HasSubstr(":3: id \"f\": UNAVAILABLE: worker 0 lost; trying again (2 of 3)"));
  EXPECT_THAT(log_.str(), HasSubstr("3 errors (1 retryable: run again to retry)"));

  // A rerun runs only the retryable one, and replaces its record: one record per id.
  FakeBackend again;
  summary = RunBatchJob(again, options_);
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(again.submit_calls(), options_.max_attempts);
  EXPECT_EQ(summary->counts.skipped, 3);
  EXPECT_EQ(summary->counts.retry_later, 1);
  EXPECT_EQ(ById().size(), 4u);
  EXPECT_THAT(log_.str(), HasSubstr("out.jsonl: removed 1 records of earlier runs"));
}

TEST_F(BatchJobTest, RetryableFailureThatPassesOnRetryLeavesOnlyTheResult) {
  WriteFile(options_.input, "{\"id\": 1, \"prompt\": \"good\"}\n");
  FakeBackend backend;
  backend.fail_first_ = 1;  // the first try loses its worker after tokens came
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(backend.submit_calls(), 2);
  EXPECT_EQ(summary->counts.failed, 0);
  EXPECT_EQ(summary->counts.completed, 1);
  std::vector<json> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["finish_reason"], "eos");
}

TEST_F(BatchJobTest, PermanentErrorOfAnEditedLineRunsAgain) {
  WriteFile(options_.input,
            "{\"id\": \"x\", \"prompt\": \"reject\"}\n{\"id\": \"y\", \"prompt\": \"huge\"}\n");
  FakeBackend backend;
  ASSERT_TRUE(RunBatchJob(backend, options_).ok());
  EXPECT_EQ(ById()["\"x\""]["error"]["code"], "INVALID_ARGUMENT");
  // Unchanged input: permanent errors stay, nothing runs.
  FakeBackend idle;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(idle, options_);
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(idle.submit_calls(), 0);
  EXPECT_EQ(summary->counts.skipped, 2);
  // x fixed: its error record is replaced by its result; y's stays.
  WriteFile(options_.input,
            "{\"id\": \"x\", \"prompt\": \"good\"}\n{\"id\": \"y\", \"prompt\": \"huge\"}\n");
  FakeBackend fixed;
  summary = RunBatchJob(fixed, options_);
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(fixed.submit_calls(), 1);
  auto by_id = ById();
  ASSERT_EQ(by_id.size(), 2u);
  EXPECT_EQ(by_id["\"x\""]["finish_reason"], "eos");
  EXPECT_EQ(by_id["\"y\""]["error"]["code"], "RESOURCE_EXHAUSTED");
}

TEST_F(BatchJobTest, OutputOfOlderVersionsWithSeveralRecordsPerIdIsCompacted) {
  WriteFile(options_.input,
            "{\"id\": \"a\", \"prompt\": \"aa\"}\n{\"id\": \"b\", \"prompt\": \"reject\"}\n");
  // As older versions left it after three runs: errors without "retryable", then a result.
  WriteFile(options_.output,
            "{\"id\":\"a\",\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"x\"},\"finish_"
            "reason\":\"error\"}\n"
            "{\"id\":\"b\",\"error\":{\"code\":\"INVALID_ARGUMENT\",\"message\":\"bad\"},\"finish_"
            "reason\":\"error\"}\n"
            "{\"id\":\"a\",\"error\":{\"code\":\"INTERNAL\",\"message\":\"y\"},\"finish_reason\":"
            "\"error\"}\n"
            "{\"id\":\"b\",\"error\":{\"code\":\"INVALID_ARGUMENT\",\"message\":\"bad\"},\"finish_"
            "reason\":\"error\"}\n"
            "{\"id\":\"a\",\"text\":\"t\",\"token_ids\":[1],\"finish_reason\":\"eos\","
            "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n");
  FakeBackend backend;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(backend.submit_calls(), 0) << "a has a result; b's INVALID_ARGUMENT is permanent";
  auto by_id = ById();  // fails on two records of one id
  ASSERT_EQ(by_id.size(), 2u);
  EXPECT_EQ(by_id["\"a\""]["text"], "t");
  EXPECT_EQ(by_id["\"b\""]["error"]["message"], "bad");
}

TEST_F(BatchJobTest, UnreachableBackendFailsTheJob) {
  WriteFile(options_.input, "{\"id\": 1, \"prompt\": \"x\"}\n");
  FakeBackend down;
  down.info_error_ = true;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(down, options_);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr("cannot reach the backend"));

  FakeBackend draining;
  draining.always_unavailable_ = true;
  options_.unavailable_timeout = std::chrono::milliseconds(50);
  summary = RunBatchJob(draining, options_);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kUnavailable) << summary.status();
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr("server is draining"));
  EXPECT_GT(draining.submit_calls(), 1) << "UNAVAILABLE is retried before giving up";
  EXPECT_TRUE(Records().empty());

  // The same when the refusals come in final chunks (a remote backend whose server is down).
  FakeBackend remote_down;
  remote_down.always_unavailable_ = true;
  remote_down.refuse_in_final_ = true;
  summary = RunBatchJob(remote_down, options_);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kUnavailable) << summary.status();
  EXPECT_GT(remote_down.submit_calls(), 1);
  EXPECT_TRUE(Records().empty());
}

TEST_F(BatchJobTest, BadFiles) {
  FakeBackend backend;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(backend, options_);  // no input
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr("in.jsonl"));

  WriteFile(options_.input, "{\"id\": 1, \"prompt\": \"x\"}\n");
  WriteFile(options_.output, "{\"id\": 1, \"finish_reason\": \"eos\"}\nnot json\n{\"id\": 2}\n");
  summary = RunBatchJob(backend, options_);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr("out.jsonl:2: not a"));
  EXPECT_EQ(backend.submit_calls(), 0);

  options_.output = options_.input;
  summary = RunBatchJob(backend, options_);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BatchRecords, InvalidUtf8IsReplacedNotThrown) {
  BatchResult result;
  result.text = "a\xff";
  result.finish_reason = "eos";
  const std::string line = RecordLine(ResultRecord("x", result, {}));
  EXPECT_THAT(line, HasSubstr("a\xef\xbf\xbd"));
  EXPECT_EQ(line.back(), '\n');
}

TEST(IsPermanentError, TheSameRequestWouldFailTheSameWay) {
  EXPECT_TRUE(IsPermanentError(absl::InvalidArgumentError("temperature must be in [0, 100]")));
  EXPECT_TRUE(IsPermanentError(
      absl::ResourceExhaustedError("prompt has 9000 tokens; max_model_len is 4096")));
  EXPECT_TRUE(IsPermanentError(absl::FailedPreconditionError("no tokenizer.json")));
  EXPECT_FALSE(IsPermanentError(absl::ResourceExhaustedError("queue full: 3 waiting, limit 3")));
  EXPECT_FALSE(IsPermanentError(absl::UnavailableError("worker lost")));
  EXPECT_FALSE(IsPermanentError(absl::InternalError("bug")));
  EXPECT_FALSE(IsPermanentError(absl::DeadlineExceededError("deadline")));
  EXPECT_FALSE(IsPermanentError(absl::CancelledError("drained")));
}

TEST(IsQueueFull, OnlyTheQueue) {
  EXPECT_TRUE(IsQueueFull(absl::ResourceExhaustedError("waiting queue is full (256 requests)")));
  EXPECT_FALSE(IsQueueFull(absl::ResourceExhaustedError("prompt of 9000 tokens exceeds 4096")));
  EXPECT_FALSE(IsQueueFull(absl::UnavailableError("queue closed")));
}

TEST(BatchProgress, BarAndDurations) {
  EXPECT_EQ(FormatDuration(42), "42s");
  EXPECT_EQ(FormatDuration(192), "3m12s");
  EXPECT_EQ(FormatDuration(7500), "2h05m");
  BatchCounts c;
  c.total = 100;
  c.skipped = 20;
  c.completed = 28;
  c.failed = 1;
  c.malformed = 1;
  c.generated_tokens = 1000;
  // 30 ran in 10 s (3/s); 50 remain -> 17 s.
  EXPECT_EQ(BatchProgress::BarText(c, 10),
            "[##########..........] 50/100 50.0% | 100.0 tok/s | ETA 17s | 2 errors");

  // A long prompt in chunked prefill shows its progress.
  BatchCounts prefilling = c;
  prefilling.prefill_done = 98304;
  prefilling.prefill_total = 524288;
  EXPECT_THAT(BatchProgress::BarText(prefilling, 10),
              HasSubstr("| prefill 98304/524288 tokens (18.8%)"));

  std::ostringstream terminal, file;
  BatchProgress bar(terminal, true), quiet(file, false);
  bar.Update(c, BatchProgress::Clock::now(), true);
  bar.Message("line 3: bad");
  bar.Finish("summary");
  EXPECT_THAT(terminal.str(), HasSubstr("\r\033[K[####"));
  EXPECT_THAT(terminal.str(), HasSubstr("\r\033[Kline 3: bad\n"));
  EXPECT_THAT(terminal.str(), ::testing::EndsWith("summary\n"));
  quiet.Update(c, BatchProgress::Clock::now(), true);
  quiet.Finish("summary");
  EXPECT_EQ(file.str(), "summary\n");
}

}  // namespace
}  // namespace bitserve::cli
