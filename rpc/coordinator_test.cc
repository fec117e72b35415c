// The coordinator on the real `tiny` checkpoint (LLaMA-3 tokenizer, CPU engine): batched serving
// gives exactly what one sequence alone gives, and every request ends exactly once.
#include "rpc/coordinator.h"

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "gtest/gtest.h"
#include "runtime/generation.h"
#include "runtime/generation_config.h"
#include "runtime/synthetic_checkpoint.h"

namespace bitserve::rpc {
namespace {

namespace fs = std::filesystem;

const fs::path& TinyModel() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("bitserve_coordinator_test_" + std::to_string(getpid()));
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
GenerateResult Alone(const std::vector<int32_t>& prompt, const SamplingParams& sampling, int max_new,
                     uint64_t seed) {
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
  coordinator->Cancel(*id);
  cancelled.Wait();
  EXPECT_EQ(cancelled.Final().finish_reason, "cancelled");
  EXPECT_EQ(cancelled.finals, 1);
  coordinator->Cancel(*id);  // unknown by now: ignored

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
  auto too_long = coordinator->Submit(TokenInput{std::vector<int32_t>(300, 5)}, ok, unused.Callback());
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

}  // namespace
}  // namespace bitserve::rpc
