// The coordinator on the real `tiny` checkpoint (LLaMA-3 tokenizer, CPU engine): batched serving
// gives exactly what one sequence alone gives, and every request ends exactly once.
#include "rpc/coordinator.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/kv_cache_format.h"
#include "runtime/checkpoint/generation_config.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"
#include "runtime/generation/generation.h"

namespace bitserve::rpc {
namespace {

namespace fs = std::filesystem;

const fs::path& TinyModel() {
  static const fs::path dir = [] {
    fs::path d =
        fs::temp_directory_path() / ("bitserve_coordinator_test_" + std::to_string(getpid()));
    auto preset = FindModelPreset("tiny");
    EXPECT_TRUE(preset.ok());
    EXPECT_TRUE(WriteSyntheticCheckpoint(*preset, d, {}).ok());
    return d;
  }();
  return dir;
}

// Collects one request's chunks.
struct Result {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<GenerationChunk> chunks;
  bool done = false;
  int finals = 0;

  ChunkCallback Callback() {
    return [this](GenerationChunk c) {
      std::lock_guard<std::mutex> lock(mu);
      finals += c.final;
      done = done || c.final;
      chunks.push_back(std::move(c));
      cv.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; }));
  }
  std::vector<int32_t> Tokens() {
    std::vector<int32_t> t;
    for (const auto& c : chunks) t.insert(t.end(), c.token_ids.begin(), c.token_ids.end());
    return t;
  }
  std::string Text() {
    std::string t;
    for (const auto& c : chunks) t += c.text;
    return t;
  }
  const GenerationChunk& Final() { return chunks.back(); }
};

std::unique_ptr<Coordinator> Make(int max_num_seqs = 8, int max_waiting = 64, int num_blocks = 0,
                                  ServingMetrics* metrics = nullptr) {
  CoordinatorOptions options;
  options.model_dir = TinyModel();
  options.engine.block_size = 4;
  options.engine.num_kv_blocks = num_blocks;
  options.scheduler.max_num_seqs = max_num_seqs;
  options.scheduler.max_waiting = max_waiting;
  options.scheduler.max_num_batched_tokens = 64;
  options.scheduler.long_prefill_chunk = 16;
  options.scheduler.max_model_len = 256;
  options.metrics = metrics;
  options.log_requests = false;
  auto c = Coordinator::Create(options);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

// The single-sequence reference: runtime Generate on its own CPU engine.
GenerateResult Alone(const std::vector<int32_t>& prompt, const SamplingParams& sampling,
                     int max_new, uint64_t seed) {
  EngineOptions options;
  options.max_sequences = 1;
  auto engine = LoadEngine(TinyModel(), options);
  EXPECT_TRUE(engine.ok());
  GenerateRequest request;
  request.prompt = prompt;
  request.sampling = sampling;
  request.sampling.seed = seed;
  request.max_new_tokens = max_new;
  request.ignore_eos = true;
  auto tokenizer = Tokenizer::Load(TinyModel());
  EXPECT_TRUE(tokenizer.ok());
  auto result = Generate(**engine, tokenizer->get(), request);
  EXPECT_TRUE(result.ok()) << result.status();
  return *result;
}

TEST(Coordinator, ConcurrentRequestsGiveWhatEachGivesAlone) {
  auto coordinator = Make();
  ASSERT_NE(coordinator, nullptr);
  const int kRequests = 12;  // more than max_num_seqs: some wait, prompts longer than a chunk
  std::vector<std::unique_ptr<Result>> results;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<SamplingParams> sampling(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 3 + 5 * i; ++t) prompt.push_back(100 + 37 * t + 11 * i);
    prompts.push_back(prompt);
    if (i % 2) {
      sampling[i].temperature = 0.9f;
      sampling[i].top_k = 40;
    }
    sampling[i].seed = 1000 + i;
    GenerationParams params;
    params.sampling = sampling[i];
    params.max_new_tokens = 6 + i;
    params.ignore_eos = true;
    results.push_back(std::make_unique<Result>());
    auto id = coordinator->Submit(TokenInput{prompt}, params, results.back()->Callback());
    ASSERT_TRUE(id.ok()) << id.status();
  }
  for (int i = 0; i < kRequests; ++i) {
    results[i]->Wait();
    EXPECT_EQ(results[i]->finals, 1);
    EXPECT_EQ(results[i]->Final().finish_reason, "length");
    EXPECT_EQ(results[i]->Final().usage.prompt_tokens, static_cast<int>(prompts[i].size()));
    EXPECT_EQ(results[i]->Final().usage.completion_tokens, 6 + i);
    const GenerateResult alone = Alone(prompts[i], sampling[i], 6 + i, 1000 + i);
    EXPECT_EQ(results[i]->Tokens(), alone.tokens) << "request " << i;
    EXPECT_EQ(results[i]->Text(), alone.text) << "request " << i;
  }
  EXPECT_EQ(coordinator->State().running, 0);
}

TEST(Coordinator, PreemptionUnderKvPressureChangesNoOutput) {
  // 24 blocks of 4 tokens: four sequences of ~40 tokens cannot all hold their cache at once.
  auto coordinator = Make(/*max_num_seqs=*/4, 64, /*num_blocks=*/24);
  ASSERT_NE(coordinator, nullptr);
  std::vector<std::unique_ptr<Result>> results;
  std::vector<std::vector<int32_t>> prompts;
  SamplingParams hot;
  hot.temperature = 1.0f;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 20; ++t) prompt.push_back(500 + 13 * t + i);
    prompts.push_back(prompt);
    GenerationParams params;
    params.sampling = hot;
    params.sampling.seed = 7 + i;
    params.max_new_tokens = 20;
    params.ignore_eos = true;
    results.push_back(std::make_unique<Result>());
    ASSERT_TRUE(coordinator->Submit(TokenInput{prompt}, params, results.back()->Callback()).ok());
  }
  for (int i = 0; i < 4; ++i) {
    results[i]->Wait();
    EXPECT_EQ(results[i]->Tokens(), Alone(prompts[i], hot, 20, 7 + i).tokens) << i;
  }
}

TEST(Coordinator, TextChatStopsAndCancellation) {
  ServingMetrics metrics;
  auto coordinator = Make(8, 64, 0, &metrics);
  ASSERT_NE(coordinator, nullptr);

  // Text gets BOS; the result equals token input of Tokenize(text, true).
  auto ids = coordinator->Tokenize("Hello world", true);
  ASSERT_TRUE(ids.ok());
  Result by_text, by_ids;
  GenerationParams params;
  params.max_new_tokens = 8;
  params.ignore_eos = true;
  ASSERT_TRUE(coordinator->Submit(TextInput{"Hello world"}, params, by_text.Callback()).ok());
  ASSERT_TRUE(coordinator->Submit(TokenInput{*ids}, params, by_ids.Callback()).ok());
  by_text.Wait();
  by_ids.Wait();
  EXPECT_EQ(by_text.Tokens(), by_ids.Tokens());
  EXPECT_EQ(by_text.Final().usage.prompt_tokens, static_cast<int>(ids->size()));

  // A client stop token ends with "stop" and is included in the tokens.
  Result stopped;
  GenerationParams stop_params = params;
  stop_params.stop_token_ids = {by_ids.Tokens()[2]};
  ASSERT_TRUE(coordinator->Submit(TokenInput{*ids}, stop_params, stopped.Callback()).ok());
  stopped.Wait();
  EXPECT_EQ(stopped.Final().finish_reason, "stop");
  const std::vector<int32_t> expected = by_ids.Tokens();
  const std::vector<int32_t> got = stopped.Tokens();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), expected[2]);
  EXPECT_LE(got.size(), 3u);

  // Chat input goes through the template.
  Result chat;
  ASSERT_TRUE(coordinator->Submit(ChatInput{{{"user", "hi"}}}, params, chat.Callback()).ok());
  chat.Wait();
  EXPECT_GT(chat.Final().usage.prompt_tokens, 3);

  // Cancel a long request: it ends once with "cancelled".
  Result cancelled;
  GenerationParams long_params = params;
  long_params.max_new_tokens = 200;
  auto id = coordinator->Submit(TokenInput{*ids}, long_params, cancelled.Callback());
  ASSERT_TRUE(id.ok());
  coordinator->Cancel(*id, absl::CancelledError("cancelled"));
  cancelled.Wait();
  EXPECT_EQ(cancelled.Final().finish_reason, "cancelled");
  EXPECT_EQ(cancelled.finals, 1);
  coordinator->Cancel(*id, absl::CancelledError("cancelled"));  // unknown by now: ignored

  const std::string text = metrics.RenderPrometheus();
  EXPECT_NE(text.find("bitserve_requests_total"), std::string::npos);
  EXPECT_NE(text.find("cancelled"), std::string::npos);
}

TEST(Coordinator, BadRequestsAreRejectedBeforeAnythingIsQueued) {
  auto coordinator = Make(1, 2);
  ASSERT_NE(coordinator, nullptr);
  Result unused;
  GenerationParams bad;
  bad.sampling.top_p = 1.5f;
  auto s = coordinator->Submit(TokenInput{{1, 2}}, bad, unused.Callback());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("top_p"), std::string::npos);
  GenerationParams ok;
  ok.max_new_tokens = 0;
  EXPECT_EQ(coordinator->Submit(TokenInput{{1}}, ok, unused.Callback()).status().code(),
            absl::StatusCode::kInvalidArgument);
  ok.max_new_tokens = 4;
  EXPECT_EQ(coordinator->Submit(TokenInput{{-1}}, ok, unused.Callback()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coordinator->Submit(TokenInput{{}}, ok, unused.Callback()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto too_long =
      coordinator->Submit(TokenInput{std::vector<int32_t>(300, 5)}, ok, unused.Callback());
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(too_long.status().message()).find("300"), std::string::npos);
  EXPECT_EQ(coordinator->State().waiting + coordinator->State().running, 0);

  // Queue full: at most one running and two waiting; a third may be refused with the numbers.
  GenerationParams slow;
  slow.max_new_tokens = 100;
  slow.ignore_eos = true;
  Result a, b, c;
  ASSERT_TRUE(coordinator->Submit(TokenInput{{1, 2, 3}}, slow, a.Callback()).ok());
  ASSERT_TRUE(coordinator->Submit(TokenInput{{1, 2, 3}}, slow, b.Callback()).ok());
  auto full = coordinator->Submit(TokenInput{{1, 2, 3}}, slow, c.Callback());
  if (!full.ok()) {  // the first may already have been admitted, freeing the queue
    EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(std::string(full.status().message()).find("queue"), std::string::npos);
  }

  // Drain: no new requests, those in flight end (cancelled at the deadline), then ready is false.
  coordinator->Drain(std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  a.Wait();
  b.Wait();
  EXPECT_FALSE(coordinator->Ready());
  EXPECT_EQ(coordinator->Submit(TokenInput{{1}}, ok, unused.Callback()).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(CoordinatorTest, PrefillProgressOfALongPromptWhenAsked) {
  auto c = Make();  // long_prefill_chunk 16, budget 64
  ASSERT_NE(c, nullptr);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 70; ++i) prompt.push_back(100 + i);
  for (const bool asked : {true, false}) {
    Result r;
    GenerationParams params;
    params.max_new_tokens = 3;
    params.prefill_progress = asked;
    ASSERT_TRUE(c->Submit(TokenInput{prompt}, params, r.Callback()).ok());
    r.Wait();
    std::vector<int> progress;
    for (const GenerationChunk& chunk : r.chunks) {
      if (chunk.prompt_tokens_processed == 0) continue;
      EXPECT_TRUE(chunk.token_ids.empty());
      EXPECT_EQ(chunk.usage.prompt_tokens, 70);
      progress.push_back(chunk.prompt_tokens_processed);
    }
    if (asked) {
      // 70 tokens in chunks of 16: progress after 16, 32, 48, 64; the last chunk samples.
      EXPECT_EQ(progress, (std::vector<int>{16, 32, 48, 64}));
    } else {
      EXPECT_TRUE(progress.empty());
    }
    EXPECT_EQ(r.Tokens().size(), 3u);
  }
}

// A real CPU engine that fails every step whose batch holds kPoison (as an engine fails a batch
// on one entry's bad input). With depth > 1 it takes steps pipelined, as a pipeline of workers
// does: StartStep runs the step and FinishStep hands back its outcome, oldest first.
class PoisonedEngine final : public Engine {
 public:
  static constexpr int32_t kPoison = 777;
  PoisonedEngine(std::unique_ptr<Engine> inner, int depth)
      : inner_(std::move(inner)), depth_(depth) {}

  const ModelConfig& config() const override { return inner_->config(); }
  int block_size() const override { return inner_->block_size(); }
  int num_kv_blocks() const override { return inner_->num_kv_blocks(); }
  int64_t max_model_len() const override { return inner_->max_model_len(); }
  int max_batch_tokens() const override { return inner_->max_batch_tokens(); }
  std::string device_name() const override { return inner_->device_name(); }
  KvDtype kv_dtype() const override { return inner_->kv_dtype(); }
  KvRotation kv_rotation() const override { return inner_->kv_rotation(); }
  absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) override {
    return inner_->Forward(entries, logits);
  }
  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override {
    ++steps_;
    for (size_t e = 0; e < entries.size(); ++e) {
      for (int32_t t : entries[e].tokens) {
        if (t == kPoison)
          return absl::InvalidArgumentError(absl::StrCat("entry ", e, ": token 777 is poison"));
      }
    }
    return inner_->Step(entries, samples, results);
  }
  int max_steps_in_flight() const override { return depth_; }
  absl::Status StartStep(std::span<const BatchEntry> entries,
                         std::span<const SampleSpec> samples) override {
    Outcome outcome;
    outcome.status = Step(entries, samples, &outcome.results);
    pending_.push_back(std::move(outcome));
    return absl::OkStatus();
  }
  absl::Status FinishStep(std::vector<SampleResult>* results) override {
    Outcome outcome = std::move(pending_.front());
    pending_.pop_front();
    *results = std::move(outcome.results);
    return outcome.status;
  }
  int steps() const { return steps_; }

 private:
  struct Outcome {
    absl::Status status;
    std::vector<SampleResult> results;
  };
  std::unique_ptr<Engine> inner_;
  const int depth_;
  std::deque<Outcome> pending_;
  std::atomic<int> steps_{0};
};

// Defect: one request whose input fails the engine step (an id outside the vocabulary, once)
// failed every request batched with it. Now the failed step is taken apart: the request that
// fails alone ends with the error, the others go on and give what they give alone.
TEST(Coordinator, ASequenceThatFailsTheStepEndsAloneOthersGoOn) {
  for (const int depth : {1, 2}) {
    SCOPED_TRACE(absl::StrCat("steps in flight: ", depth));
    ServingMetrics metrics;
    CoordinatorOptions options;
    options.model_dir = TinyModel();
    options.engine.block_size = 4;
    options.scheduler.max_num_seqs = 8;
    options.scheduler.max_num_batched_tokens = 64;
    options.scheduler.long_prefill_chunk = 16;
    options.scheduler.max_model_len = 256;
    options.metrics = &metrics;
    options.log_requests = false;
    EngineOptions engine_options;
    engine_options.block_size = 4;
    engine_options.max_model_len = 256;
    engine_options.max_batch_tokens = 64;
    auto inner = LoadEngine(TinyModel(), engine_options);
    ASSERT_TRUE(inner.ok()) << inner.status();
    auto engine = std::make_unique<PoisonedEngine>(*std::move(inner), depth);
    auto coordinator = Coordinator::Create(options, std::move(engine));
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();

    const int kRequests = 6;
    std::vector<std::unique_ptr<Result>> results;
    std::vector<std::vector<int32_t>> prompts;
    GenerationParams params;
    params.max_new_tokens = 12;
    params.ignore_eos = true;
    params.sampling.seed = 5;
    for (int i = 0; i < kRequests; ++i) {
      std::vector<int32_t> prompt = {100 + i, 200 + 3 * i, 300 + i};
      if (i == 2) prompt.push_back(PoisonedEngine::kPoison);
      prompts.push_back(prompt);
      results.push_back(std::make_unique<Result>());
      ASSERT_TRUE(
          (*coordinator)->Submit(TokenInput{prompt}, params, results.back()->Callback()).ok());
    }
    for (int i = 0; i < kRequests; ++i) {
      results[i]->Wait();
      EXPECT_EQ(results[i]->finals, 1) << i;
      if (i == 2) {
        EXPECT_EQ(results[i]->Final().finish_reason, "error");
        EXPECT_EQ(results[i]->Final().status.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(results[i]->Final().status.message()),
                    ::testing::HasSubstr("poison"));
        continue;
      }
      EXPECT_EQ(results[i]->Final().finish_reason, "length")
          << i << ": " << results[i]->Final().status;
      EXPECT_EQ(results[i]->Tokens(), Alone(prompts[i], params.sampling, 12, 5).tokens) << i;
    }
    // The scheduler holds nothing of the failed request, and metrics counted one error.
    EXPECT_EQ((*coordinator)->State().running + (*coordinator)->State().waiting, 0);
    EXPECT_NE(metrics.RenderPrometheus().find(
                  "bitserve_requests_total{outcome=\"error\",code=\"INVALID_ARGUMENT\"} 1"),
              std::string::npos)
        << metrics.RenderPrometheus();
  }
}

TEST(Coordinator, ATokenizerThatDoesNotFitTheModelIsRefusedAtLoad) {
  const fs::path dir =
      fs::temp_directory_path() / ("bitserve_coordinator_mismatch_" + std::to_string(getpid()));
  fs::remove_all(dir);
  auto preset = FindModelPreset("test-gqa");  // 1,024 ids
  ASSERT_TRUE(preset.ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, dir, {}).ok());
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(TinyModel() / file, dir / file);  // LLaMA-3's 128,256
  }
  CoordinatorOptions options;
  options.model_dir = dir;
  options.log_requests = false;
  auto coordinator = Coordinator::Create(options);
  ASSERT_FALSE(coordinator.ok());
  EXPECT_EQ(coordinator.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(coordinator.status().message()),
              ::testing::HasSubstr("does not belong to this model"));
  fs::remove_all(dir);
}

// Defect: a 63 MB prompt was encoded in full (16 s, 1.5 GB) before it was found too long. Text
// beyond what max_model_len tokens can cover is refused on its size; below that, encoding stops
// at the limit.
TEST(Coordinator, OverlongTextIsRefusedWithoutEncodingItAll) {
  auto coordinator = Make();  // max_model_len 256
  ASSERT_NE(coordinator, nullptr);
  Result unused;
  GenerationParams params;
  const std::string huge(8 << 20, 'a');
  auto refused = coordinator->Submit(TextInput{huge}, params, unused.Callback());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::AllOf(::testing::HasSubstr("8388608 bytes"),
                               ::testing::HasSubstr("more than 255 tokens")));
  auto chat = coordinator->Submit(ChatInput{{{"user", huge}}}, params, unused.Callback());
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(chat.status().message()), ::testing::HasSubstr("the messages have"));
  auto tokenized = coordinator->Tokenize(huge, true);
  EXPECT_EQ(tokenized.status().code(), absl::StatusCode::kResourceExhausted);
  // Short enough in bytes, too many tokens: refused once encoding passes the limit.
  std::string words;
  for (int i = 0; i < 400; ++i) words += " w" + std::to_string(i);
  auto too_many = coordinator->Submit(TextInput{words}, params, unused.Callback());
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(too_many.status().message()),
              ::testing::HasSubstr("prompt has more than 255 tokens; max_model_len is 256"));
  auto chat_many = coordinator->Submit(ChatInput{{{"user", words}}}, params, unused.Callback());
  EXPECT_EQ(chat_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(coordinator->Tokenize(words, false).status().code(),
            absl::StatusCode::kResourceExhausted);
  // At the limit, text still works.
  EXPECT_TRUE(coordinator->Tokenize(" w1 w2 w3", false).ok());
  EXPECT_EQ(coordinator->State().waiting + coordinator->State().running, 0);
}

// What every generated token is checked against (stop strings, stop ids) and what every response
// echoes (request_id) is bounded, so that one request cannot slow all others.
TEST(Coordinator, PerTokenWorkOfARequestIsBounded) {
  auto coordinator = Make();
  ASSERT_NE(coordinator, nullptr);
  Result unused;
  auto refused = [&](GenerationParams params) {
    params.max_new_tokens = 2;
    return coordinator->Submit(TokenInput{{1, 2}}, params, unused.Callback()).status();
  };
  GenerationParams many_stops;
  many_stops.stop_strings.assign(65, "x");
  EXPECT_THAT(std::string(refused(many_stops).message()),
              ::testing::HasSubstr("stop holds 65 strings; at most 64"));
  GenerationParams long_stop;
  long_stop.stop_strings = {"a", std::string(1025, 'b')};
  EXPECT_THAT(std::string(refused(long_stop).message()),
              ::testing::HasSubstr("stop[1] has 1025 bytes"));
  GenerationParams many_ids;
  many_ids.stop_token_ids.assign(1025, 3);
  EXPECT_THAT(std::string(refused(many_ids).message()),
              ::testing::HasSubstr("stop_token_ids holds 1025 ids"));
  GenerationParams long_id;
  long_id.request_id = std::string(1025, 'r');
  EXPECT_THAT(std::string(refused(long_id).message()),
              ::testing::HasSubstr("request_id has 1025 bytes"));
  for (const GenerationParams& p : {many_stops, long_stop, many_ids, long_id}) {
    EXPECT_EQ(refused(p).code(), absl::StatusCode::kInvalidArgument);
  }
  GenerationParams at_the_bounds;
  at_the_bounds.stop_strings.assign(64, std::string(1024, 'z'));
  at_the_bounds.stop_token_ids.assign(1024, 3);
  at_the_bounds.request_id = std::string(1024, 'r');
  at_the_bounds.max_new_tokens = 2;
  Result ok;
  ASSERT_TRUE(coordinator->Submit(TokenInput{{1, 2}}, at_the_bounds, ok.Callback()).ok());
  ok.Wait();
  EXPECT_NE(ok.Final().finish_reason, "error");
}

TEST(Coordinator, ADeadlineIsCountedApartFromACancel) {
  ServingMetrics metrics;
  auto coordinator = Make(8, 64, 0, &metrics);
  ASSERT_NE(coordinator, nullptr);
  GenerationParams params;
  params.max_new_tokens = 200;
  params.ignore_eos = true;
  Result expired, cancelled;
  auto a = coordinator->Submit(TokenInput{{1, 2, 3}}, params, expired.Callback());
  auto b = coordinator->Submit(TokenInput{{1, 2, 3}}, params, cancelled.Callback());
  ASSERT_TRUE(a.ok() && b.ok());
  coordinator->Cancel(*a, absl::DeadlineExceededError("the call's deadline passed"));
  coordinator->Cancel(*b, absl::CancelledError("the client went away"));
  expired.Wait();
  cancelled.Wait();
  EXPECT_EQ(expired.Final().status.code(), absl::StatusCode::kDeadlineExceeded);
  const std::string text = metrics.RenderPrometheus();
  EXPECT_NE(
      text.find(
          "bitserve_requests_total{outcome=\"deadline_exceeded\",code=\"DEADLINE_EXCEEDED\"} 1"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("bitserve_requests_total{outcome=\"cancelled\",code=\"CANCELLED\"} 1"),
            std::string::npos)
      << text;
}

// Prefix caching on the real CPU engine, for each KV dtype: requests that share a document (more
// blocks than a prefill chunk), run after it and beside each other, give exactly the tokens they
// give with caching off; the cache is used (hits counted in the metrics); a request cancelled
// mid-prompt leaves nothing held; and after a flood of other prompts evicts the document, it is
// computed again, with the same tokens.
class PrefixCachingTest : public ::testing::TestWithParam<std::optional<KvDtype>> {};

TEST_P(PrefixCachingTest, SameTokensWithAndWithoutTheCache) {
  std::vector<int32_t> document;
  for (int t = 0; t < 90; ++t) document.push_back(200 + 13 * t);
  auto prompt = [&](int suffix) {
    std::vector<int32_t> p = document;
    for (int t = 0; t < 1 + suffix % 5; ++t) p.push_back(50 + 7 * suffix + t);
    return p;
  };
  std::map<bool, std::vector<std::vector<int32_t>>> outputs;
  for (bool caching : {false, true}) {
    ServingMetrics metrics;
    CoordinatorOptions options;
    options.model_dir = TinyModel();
    options.engine.block_size = 4;
    options.engine.num_kv_blocks = 160;  // 640 tokens: the flood below evicts the document
    options.engine.kv_dtype = GetParam();
    options.scheduler.max_num_seqs = 4;
    options.scheduler.max_num_batched_tokens = 64;
    options.scheduler.long_prefill_chunk = 16;
    options.scheduler.max_model_len = 256;
    options.scheduler.enable_prefix_caching = caching;
    options.metrics = &metrics;
    options.log_requests = false;
    auto c = Coordinator::Create(options);
    ASSERT_TRUE(c.ok()) << c.status();
    Coordinator& coordinator = **c;
    GenerationParams params;
    params.max_new_tokens = 6;
    params.ignore_eos = true;
    auto run = [&](std::vector<std::vector<int32_t>> prompts) {
      std::vector<std::unique_ptr<Result>> results;
      for (auto& p : prompts) {
        results.push_back(std::make_unique<Result>());
        ASSERT_TRUE(coordinator.Submit(TokenInput{p}, params, results.back()->Callback()).ok());
      }
      for (auto& r : results) {
        r->Wait();
        outputs[caching].push_back(r->Tokens());
      }
    };
    run({prompt(0)});
    run({prompt(1)});                                   // after the first: its blocks cached
    run({prompt(2), prompt(3), prompt(4), prompt(5)});  // side by side
    // Cancelled while its prompt is being computed: its blocks come back.
    Result cancelled;
    auto id = coordinator.Submit(TokenInput{prompt(6)}, params, cancelled.Callback());
    ASSERT_TRUE(id.ok());
    coordinator.Cancel(*id, absl::CancelledError("test"));
    cancelled.Wait();
    // A flood of unrelated prompts evicts the document; it is computed again.
    std::vector<std::vector<int32_t>> flood;
    for (int i = 0; i < 12; ++i) {
      std::vector<int32_t> p;
      for (int t = 0; t < 60; ++t) p.push_back(3000 + 101 * i + t);
      flood.push_back(p);
    }
    run(flood);
    run({prompt(7)});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (coordinator.State().kv_blocks_used > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(coordinator.State().kv_blocks_used, 0) << "blocks still held after every request";
    const std::string text = metrics.RenderPrometheus();
    const bool hits = text.find("bitserve_prefix_cache_hits_total 0\n") == std::string::npos;
    EXPECT_EQ(hits, caching) << text;
  }
  ASSERT_EQ(outputs[false].size(), outputs[true].size());
  for (size_t i = 0; i < outputs[false].size(); ++i) {
    EXPECT_EQ(outputs[true][i], outputs[false][i]) << "request " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, PrefixCachingTest,
                         ::testing::Values(std::nullopt, KvDtype::kInt8, KvDtype::kInt4),
                         [](const auto& info) {
                           return std::string(info.param ? KvDtypeName(*info.param) : "f32");
                         });

}  // namespace
}  // namespace bitserve::rpc
