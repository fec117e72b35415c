#include "rpc/coordinator.h"

#include <algorithm>
#include <deque>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "runtime/checkpoint/generation_config.h"
#include "runtime/text/detokenizer.h"
#include "runtime/text/model_tokenizer.h"
#include "runtime/text/stop_strings.h"

namespace bitserve::rpc {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// `what` is "the prompt has" or the like.
std::string TooManyBytes(absl::string_view what, size_t bytes, size_t limit,
                         const Tokenizer& tokenizer) {
  return absl::StrCat(what, " ", bytes, " bytes: more than ", limit, " tokens (of at most ",
                      tokenizer.max_token_bytes(),
                      " bytes each) can hold; max_model_len bounds it");
}

uint64_t DrawSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

}  // namespace

// One accepted request: what the scheduler does not know (sampling, stop conditions, text).
struct RequestState {
  uint64_t id = 0;
  GenerationParams params;
  ChunkCallback on_chunk;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
  std::vector<int> stop_ids;
  uint64_t seed = 0;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::optional<StopStringMatcher> matcher;
  Clock::time_point arrival, last_token;
  bool first_token_seen = false;
};

// A plan handed to the engine and not yet answered, with what its results are matched against.
struct InFlightStep {
  scheduler::StepPlan plan;
  std::vector<BatchEntry> entries;
  std::vector<SampleSpec> specs;
  std::vector<uint64_t> sampled_ids;
  std::vector<std::vector<int32_t>> histories;  // prompt/output copies for the penalties
  Clock::time_point start;
};

// What running a failed step's entries one by one found (Coordinator::Impl::Isolate).
struct StepIsolation {
  absl::flat_hash_map<uint64_t, absl::Status> failed;  // by sequence: its error when alone
  std::vector<SampleResult> results;  // one per sampling entry (a placeholder where it failed)
};

struct Coordinator::Impl {
  CoordinatorOptions options;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the model has no tokenizer.json
  std::vector<int> eos_ids;
  ModelSummary summary;

  mutable std::mutex mu;
  std::condition_variable wake;                     // the loop: work arrived
  std::condition_variable idle;                     // Drain: a request finished
  std::unique_ptr<scheduler::Scheduler> scheduler;  // guarded by mu
  absl::flat_hash_map<uint64_t, std::unique_ptr<RequestState>> requests;  // guarded by mu
  std::vector<std::pair<uint64_t, absl::Status>> cancelled;               // with why; guarded by mu
  uint64_t next_id = 1;
  bool draining = false;
  bool stopping = false;
  bool ready = false;
  std::thread loop;

  using Callbacks = std::vector<std::pair<ChunkCallback, GenerationChunk>>;
  void Loop();
  // A request's prompt as token ids, checked against the vocabulary and max_model_len.
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const GenerationInput& input) const;
  // Under mu: the engine's view of a plan (entries, sample specs and the histories they point to).
  void Prepare(InFlightStep& step);
  // Without mu, after a step of several entries failed (not UNAVAILABLE) and nothing else is in
  // the engine: runs each entry alone to find the ones that fail by themselves. Returns
  // UNAVAILABLE when the engine was lost meanwhile, else OK with `isolation` filled.
  absl::Status Isolate(const InFlightStep& step, StepIsolation* isolation);
  // Under mu: a step's results (or its failure) applied to the scheduler and the requests.
  // `isolation`: what Isolate found for a failed step (the entries that failed alone end with
  // their error; the others go on).
  // The expert load metrics of an in-process engine's last step.
  void ReportExpertLoad(const Engine& engine);
  void Complete(const InFlightStep& step, const absl::Status& status,
                const std::vector<SampleResult>& results, Callbacks& out,
                const StepIsolation* isolation = nullptr);
  // Under mu: the final chunk of a request, removed from `requests`. Callbacks run later, outside
  // the lock, in the order collected.
  void Finish(RequestState& r, const std::string& reason, absl::Status status,
              GenerationChunk chunk, std::vector<std::pair<ChunkCallback, GenerationChunk>>& out);
  void PublishState();  // under mu
  // Under mu: appends a sampled token; returns whether the request ended.
  bool Accept(RequestState& r, const SampleResult& sample, bool length_done,
              std::vector<std::pair<ChunkCallback, GenerationChunk>>& out);
};

absl::StatusOr<std::vector<int32_t>> Coordinator::Impl::PromptTokens(
    const GenerationInput& input) const {
  // A prompt leaves room for one new token. Text is bounded before it is encoded (its bytes
  // against what the limit's tokens can cover), and encoding stops once past the limit, so that
  // a huge prompt costs no more than one at the limit.
  const size_t limit = static_cast<size_t>(summary.max_model_len) - 1;
  const int vocab = summary.vocab_size;
  std::vector<int32_t> prompt;
  bool encoded = false;
  if (auto* text = std::get_if<TextInput>(&input)) {
    if (TextExceedsTokens(*tokenizer, text->text.size(), limit)) {
      return absl::ResourceExhaustedError(
          TooManyBytes("the prompt has", text->text.size(), limit, *tokenizer));
    }
    EncodeOptions options;
    options.add_bos = tokenizer->add_bos_default();  // as `generate --prompt` and transformers
    options.max_tokens = limit;
    prompt = tokenizer->Encode(text->text, options);
    encoded = true;
  } else if (auto* chat = std::get_if<ChatInput>(&input)) {
    size_t bytes = 0;
    for (const ChatMessage& message : chat->messages) bytes += message.content.size();
    if (TextExceedsTokens(*tokenizer, bytes, limit)) {
      return absl::ResourceExhaustedError(
          TooManyBytes("the messages have", bytes, limit, *tokenizer));
    }
    ASSIGN_OR_RETURN(prompt, ApplyChatTemplate(*tokenizer, chat->messages, true, limit));
    encoded = true;
  } else {
    prompt = std::get<TokenInput>(input).ids;
  }
  // Ids from the tokenizer are checked as well: one outside the vocabulary would fail the engine
  // step of every sequence batched with it.
  for (int32_t id : prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(encoded ? "the tokenizer made token id " : "token_ids: ", id,
                       ", which is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (prompt.size() > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("prompt has ", encoded ? "more than " : "", encoded ? limit : prompt.size(),
                     " tokens; max_model_len is ", summary.max_model_len,
                     " (the prompt and at least one new token must fit)"));
  }
  return prompt;
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    const CoordinatorOptions& options) {
  EngineOptions engine_options = options.engine;
  engine_options.max_sequences =
      std::max(engine_options.max_sequences, options.scheduler.max_num_seqs);
  engine_options.max_batch_tokens =
      std::max(engine_options.max_batch_tokens, options.scheduler.max_num_batched_tokens);
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, LoadEngine(options.model_dir, engine_options));
  return Create(options, std::move(engine));
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    const CoordinatorOptions& options, std::unique_ptr<Engine> engine_in) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->engine = std::move(engine_in);
  const Engine& engine = *impl->engine;
  ASSIGN_OR_RETURN(impl->tokenizer, LoadModelTokenizer(options.model_dir, engine.config()));
  ASSIGN_OR_RETURN(GenerationConfig generation,
                   LoadGenerationConfig(options.model_dir, engine.config()));
  impl->eos_ids = generation.eos_token_ids;

  scheduler::SchedulerConfig config = options.scheduler;
  config.block_size = engine.block_size();
  config.num_kv_blocks = engine.num_kv_blocks();
  config.num_kv_pools = engine.num_kv_pools();
  config.max_model_len =
      static_cast<int>(std::min<int64_t>(config.max_model_len, engine.max_model_len()));
  config.max_num_batched_tokens =
      std::min(config.max_num_batched_tokens, engine.max_batch_tokens());
  config.long_prefill_chunk = std::min(config.long_prefill_chunk, config.max_num_batched_tokens);
  ASSIGN_OR_RETURN(impl->scheduler, scheduler::Scheduler::Create(config));

  ModelSummary& s = impl->summary;
  const ModelConfig& c = engine.config();
  s.model_dir = options.model_dir.string();
  s.architecture = "BitNetForCausalLM";
  s.vocab_size = c.vocab_size;
  s.hidden_size = c.hidden_size;
  s.num_layers = c.num_hidden_layers;
  s.num_attention_heads = c.num_attention_heads;
  s.num_key_value_heads = c.num_key_value_heads;
  s.max_model_len = config.max_model_len;
  s.max_num_seqs = config.max_num_seqs;
  s.max_waiting = config.max_waiting;
  s.max_num_batched_tokens = config.max_num_batched_tokens;
  s.kv_block_size = config.block_size;
  s.kv_num_blocks = config.num_kv_blocks;
  s.kv_capacity_tokens = config.kv_capacity_tokens();
  s.kv_dtype = std::string(KvDtypeName(engine.kv_dtype()));
  s.device = engine.device_name();
  s.eos_token_ids = impl->eos_ids;

  impl->ready = true;
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->PublishState();
  }
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Coordinator::~Coordinator() { Shutdown(); }

absl::StatusOr<std::vector<int32_t>> Coordinator::Tokenize(const std::string& text,
                                                           bool add_special) {
  const Impl& m = *impl_;
  if (m.tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(m.options.model_dir.string(), " has no tokenizer.json"));
  }
  // Bounded as prompts are: nothing longer than max_model_len tokens is encoded in full.
  const size_t limit = static_cast<size_t>(m.summary.max_model_len);
  if (TextExceedsTokens(*m.tokenizer, text.size(), limit)) {
    return absl::ResourceExhaustedError(
        TooManyBytes("the text has", text.size(), limit, *m.tokenizer));
  }
  // As Hugging Face's add_special_tokens: BOS when the tokenizer's own config adds it.
  EncodeOptions options;
  options.add_bos = add_special && m.tokenizer->add_bos_default();
  options.max_tokens = limit;
  std::vector<int32_t> ids = m.tokenizer->Encode(text, options);
  if (ids.size() > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the text has more than ", limit, " tokens, the most this server encodes (max_model_len)"));
  }
  return ids;
}

absl::StatusOr<ModelSummary> Coordinator::Info() { return impl_->summary; }

absl::StatusOr<uint64_t> Coordinator::Submit(GenerationInput input, GenerationParams params,
                                             ChunkCallback on_chunk) {
  Impl& m = *impl_;
  auto reject = [&](absl::Status status) {
    if (m.options.metrics)
      m.options.metrics->RequestRejected(absl::StatusCodeToString(status.code()));
    return status;
  };
  // Validation first: nothing is queued for a bad request.
  if (absl::Status s = params.sampling.Validate(); !s.ok()) return reject(s);
  if (params.max_new_tokens < 1) {
    return reject(absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be >= 1, got ", params.max_new_tokens)));
  }
  if (absl::Status s = StopStringMatcher::Validate(params.stop_strings); !s.ok()) return reject(s);
  const Tokenizer* tok = m.tokenizer.get();
  if (tok == nullptr &&
      (!params.stop_strings.empty() || !std::holds_alternative<TokenInput>(input))) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        m.options.model_dir.string(), " has no tokenizer.json: use token ids, no stop strings")));
  }
  // Bounded like stop strings: each is checked for every generated token.
  constexpr size_t kMaxStopTokenIds = 1024, kMaxRequestIdBytes = 1024;
  if (params.stop_token_ids.size() > kMaxStopTokenIds) {
    return reject(absl::InvalidArgumentError(absl::StrCat("stop_token_ids holds ",
                                                          params.stop_token_ids.size(),
                                                          " ids; at most ", kMaxStopTokenIds)));
  }
  if (params.request_id.size() > kMaxRequestIdBytes) {  // echoed in every response and log line
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "request_id has ", params.request_id.size(), " bytes; at most ", kMaxRequestIdBytes)));
  }
  const int vocab = m.summary.vocab_size;
  for (int id : params.stop_token_ids) {
    if (id < 0 || id >= vocab) {
      return reject(absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids: ", id, " is outside the vocabulary [0, ", vocab, ")")));
    }
  }
  auto state = std::make_unique<RequestState>();
  {
    absl::StatusOr<std::vector<int32_t>> prompt = m.PromptTokens(input);
    if (!prompt.ok()) return reject(prompt.status());
    state->prompt = *std::move(prompt);
  }
  const int prompt_len = static_cast<int>(state->prompt.size());
  // Like vLLM: max_tokens is cut to what the context leaves.
  const int max_new = std::min(params.max_new_tokens, m.summary.max_model_len - prompt_len);
  if (!params.ignore_eos) state->stop_ids = m.eos_ids;
  state->stop_ids.insert(state->stop_ids.end(), params.stop_token_ids.begin(),
                         params.stop_token_ids.end());
  state->seed = params.sampling.seed.value_or(DrawSeed());
  if (tok) {
    state->detokenizer.emplace(*tok);
    ASSIGN_OR_RETURN(StopStringMatcher matcher,
                     StopStringMatcher::Create(params.stop_strings, params.include_stop_string));
    state->matcher.emplace(std::move(matcher));
  }
  state->params = std::move(params);
  state->on_chunk = std::move(on_chunk);
  state->arrival = Clock::now();

  std::lock_guard<std::mutex> lock(m.mu);
  if (m.stopping || m.draining || !m.ready) {
    return reject(
        absl::UnavailableError(m.draining ? "the server is draining" : "the server is stopping"));
  }
  if (absl::Status health = m.engine->Health(); !health.ok()) return reject(health);
  const uint64_t id = m.next_id++;
  state->id = id;
  scheduler::Request request;
  request.id = id;
  request.prompt_tokens = state->prompt;
  request.max_new_tokens = max_new;
  request.priority = state->params.priority;
  if (absl::Status s = m.scheduler->Add(std::move(request)); !s.ok()) return reject(s);
  m.requests.emplace(id, std::move(state));
  m.PublishState();
  m.wake.notify_one();
  return id;
}

void Coordinator::Cancel(uint64_t id, const absl::Status& why) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cancelled.emplace_back(id, why.ok() ? absl::CancelledError("cancelled") : why);
  impl_->wake.notify_one();
}

CoordinatorState Coordinator::State() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  CoordinatorState s;
  s.ready = impl_->ready && !impl_->draining && !impl_->stopping && impl_->engine->Health().ok();
  s.draining = impl_->draining;
  s.waiting = impl_->scheduler->num_waiting();
  s.running = impl_->scheduler->num_running();
  s.kv_blocks_used = impl_->scheduler->num_kv_blocks_used();
  s.kv_blocks_free = impl_->scheduler->num_kv_blocks_free();
  return s;
}

void Coordinator::Drain(Clock::time_point deadline) {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  m.draining = true;
  m.PublishState();
  m.idle.wait_until(lock, deadline, [&] { return m.requests.empty(); });
  for (const auto& [id, r] : m.requests)
    m.cancelled.emplace_back(id, absl::CancelledError("the server is draining"));
  m.wake.notify_one();
  m.idle.wait(lock, [&] { return m.requests.empty() || m.stopping; });
}

void Coordinator::Shutdown() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.stopping) return;
    m.stopping = true;
    m.wake.notify_one();
  }
  if (m.loop.joinable()) m.loop.join();
}

void Coordinator::Impl::PublishState() {
  if (!options.metrics) return;
  options.metrics->SetState(scheduler->num_waiting(), scheduler->num_running(),
                            scheduler->num_kv_blocks_used(), scheduler->num_kv_blocks_free(),
                            scheduler->kv_capacity_tokens(),
                            ready && !draining && !stopping && engine->Health().ok());
  options.metrics->SetPrefixCache(scheduler->prefix_cache_queries(), scheduler->prefix_cache_hits(),
                                  scheduler->num_prefix_cached_blocks());
}

void Coordinator::Impl::Finish(RequestState& r, const std::string& reason, absl::Status status,
                               GenerationChunk chunk,
                               std::vector<std::pair<ChunkCallback, GenerationChunk>>& out) {
  const double e2e = Seconds(Clock::now() - r.arrival);
  chunk.final = true;
  chunk.finish_reason = reason;
  chunk.status = status;
  chunk.usage = {static_cast<int>(r.prompt.size()), static_cast<int>(r.output.size())};
  chunk.seed = r.seed;
  const std::string code = status.ok() ? "" : absl::StatusCodeToString(status.code());
  // A passed deadline is cancelled like a client that went away, but counted apart.
  const std::string outcome =
      status.code() == absl::StatusCode::kDeadlineExceeded ? "deadline_exceeded" : reason;
  if (options.metrics) {
    options.metrics->RequestFinished(outcome, code, e2e, chunk.usage.prompt_tokens,
                                     chunk.usage.completion_tokens);
  }
  if (options.log_requests) {
    std::cerr << "bitserve request id=" << r.id << " request_id=\"" << r.params.request_id
              << "\" outcome=" << outcome << (code.empty() ? "" : " code=" + code)
              << " prompt_tokens=" << chunk.usage.prompt_tokens
              << " completion_tokens=" << chunk.usage.completion_tokens << " e2e_s=" << e2e
              << std::endl;
  }
  out.emplace_back(std::move(r.on_chunk), std::move(chunk));
  requests.erase(r.id);  // r is gone from here on
  idle.notify_all();
}

bool Coordinator::Impl::Accept(RequestState& r, const SampleResult& sample, bool length_done,
                               std::vector<std::pair<ChunkCallback, GenerationChunk>>& out) {
  const auto now = Clock::now();
  if (options.metrics) {
    if (!r.first_token_seen) {
      options.metrics->FirstToken(Seconds(now - r.arrival));
    } else {
      options.metrics->InterTokenLatency(Seconds(now - r.last_token));
    }
  }
  r.first_token_seen = true;
  r.last_token = now;
  r.output.push_back(sample.token);
  GenerationChunk chunk;
  chunk.token_ids.push_back(sample.token);
  if (r.params.logprobs || r.params.sampling.top_logprobs > 0) chunk.logprobs.push_back(sample);
  std::string reason;
  if (r.detokenizer) {
    StopStringMatcher::Output o = r.matcher->Push(r.detokenizer->Push(sample.token));
    chunk.text = std::move(o.text);
    if (o.stopped) reason = "stop";
  }
  if (reason.empty() &&
      std::find(r.stop_ids.begin(), r.stop_ids.end(), sample.token) != r.stop_ids.end()) {
    // The model's own end tokens are "eos"; a client's stop_token_ids are "stop".
    const bool model_eos =
        std::find(eos_ids.begin(), eos_ids.end(), sample.token) != eos_ids.end() &&
        !r.params.ignore_eos;
    reason = model_eos ? "eos" : "stop";
  }
  if (reason.empty() && length_done) reason = "length";
  if (reason.empty()) {
    out.emplace_back(r.on_chunk, std::move(chunk));
    return false;
  }
  if (r.detokenizer && !r.matcher->stopped()) {
    chunk.text += r.matcher->Push(r.detokenizer->Flush()).text;
    if (!r.matcher->stopped()) chunk.text += r.matcher->Flush();
  }
  Finish(r, reason, absl::OkStatus(), std::move(chunk), out);
  return true;
}

void Coordinator::Impl::Prepare(InFlightStep& step) {
  const scheduler::StepPlan& plan = step.plan;
  step.histories.assign(plan.entries.size() * 2, {});
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const scheduler::PlanEntry& e = plan.entries[i];
    step.entries.push_back({e.start_position, e.token_ids, e.block_table,
                            e.samples ? LogitsWanted::kLast : LogitsWanted::kNone});
    if (!e.samples) continue;
    auto it = requests.find(e.seq_id);
    const scheduler::Sequence* seq = scheduler->FindSequence(e.seq_id);
    // Cancelled meanwhile: sample greedily anyway (the scheduler ignores the token).
    static const SamplingParams kGreedy;
    SampleSpec spec{&kGreedy, 0, 0, {}, {}};
    if (it != requests.end() && seq != nullptr) {
      const RequestState& r = *it->second;
      spec.params = &r.params.sampling;
      spec.seed = r.seed;
      spec.draw_index = seq->num_output_tokens();
      step.histories[2 * i] = r.prompt;
      step.histories[2 * i + 1] = seq->output_tokens();
      spec.prompt = step.histories[2 * i];
      spec.output = step.histories[2 * i + 1];
    }
    step.specs.push_back(spec);
    step.sampled_ids.push_back(e.seq_id);
  }
}

void Coordinator::Impl::ReportExpertLoad(const Engine& engine) {
  // An engine in this process counts its experts' rows itself (workers report theirs in their
  // step results, rpc/remote_engine.cc); one rank: rank 0.
  const std::span<const int64_t> rows = engine.last_step_expert_rows();
  const int experts = engine.config().num_experts;
  if (options.metrics == nullptr || rows.empty() || experts == 0) return;
  for (size_t i = 0; i < rows.size(); ++i) {
    options.metrics->ExpertTokens(engine.stage().layer_begin + static_cast<int>(i / experts),
                                  static_cast<int>(i % experts), 0, rows[i]);
  }
}

void Coordinator::Impl::Complete(const InFlightStep& step, const absl::Status& status,
                                 const std::vector<SampleResult>& results, Callbacks& out,
                                 const StepIsolation* isolation) {
  if (options.metrics) {
    options.metrics->StepDone(step.plan.num_tokens, static_cast<int>(step.plan.entries.size()),
                              Seconds(Clock::now() - step.start),
                              static_cast<int>(step.plan.preempted.size()));
  }
  if (status.code() == absl::StatusCode::kUnavailable) {
    // The worker is gone and the KV cache with it: every request in flight ends UNAVAILABLE
    // (nothing hangs), including those waiting, which would otherwise wait for a worker that
    // may never come. New requests are refused while Health() fails.
    (void)scheduler->AbortInFlightSteps();
    std::vector<uint64_t> ids;
    for (const auto& [id, r] : requests) ids.push_back(id);
    for (uint64_t id : ids) {
      (void)scheduler->Cancel(id);
      Finish(*requests.at(id), "error", status, {}, out);
    }
    // A replacement worker starts with empty KV memory: no cached block may be reused.
    scheduler->ClearPrefixCache();
    return;
  }
  const std::vector<SampleResult>* answers = &results;
  if (!status.ok() && isolation != nullptr) {
    // One sequence's failure ends that sequence alone: those that failed by themselves end with
    // their error, the others go on with the results of their runs alone. When other steps were
    // in flight (a pipeline; their results were dropped), everything else is recomputed instead.
    for (const auto& [seq_id, error] : isolation->failed) {
      auto it = requests.find(seq_id);
      if (it == requests.end()) continue;
      (void)scheduler->Cancel(seq_id);
      Finish(*it->second, "error",
             absl::Status(error.code(), absl::StrCat("engine step failed: ", error.message())), {},
             out);
    }
    if (scheduler->num_steps_in_flight() != 1) {
      (void)scheduler->AbortInFlightSteps();
      return;
    }
    answers = &isolation->results;
  }
  absl::Status failure = isolation != nullptr ? absl::OkStatus() : status;
  absl::StatusOr<std::vector<scheduler::FinishedSequence>> finished;
  if (failure.ok()) {
    std::vector<scheduler::SampledToken> tokens;
    for (size_t i = 0; i < answers->size(); ++i)
      tokens.push_back({step.sampled_ids[i], (*answers)[i].token});
    finished = scheduler->Update(tokens);
    if (!finished.ok())
      failure =
          absl::InternalError(absl::StrCat("scheduler update: ", finished.status().message()));
  } else {
    failure = absl::Status(status.code(), absl::StrCat("engine step failed: ", status.message()));
  }
  if (!failure.ok()) {
    // The step failed as a whole: its requests end with the error; the sequences of other steps
    // in flight (their results were dropped) are recomputed.
    (void)scheduler->AbortInFlightSteps();
    for (const scheduler::PlanEntry& e : step.plan.entries) {
      auto it = requests.find(e.seq_id);
      if (it == requests.end()) continue;
      (void)scheduler->Cancel(e.seq_id);
      Finish(*it->second, "error", failure, {}, out);
    }
    return;
  }
  // Prefill progress of long prompts, for the requests that asked.
  for (const scheduler::PlanEntry& e : step.plan.entries) {
    if (e.samples) continue;
    auto it = requests.find(e.seq_id);
    if (it == requests.end() || !it->second->params.prefill_progress) continue;
    const int prompt_len = static_cast<int>(it->second->prompt.size());
    GenerationChunk progress;
    progress.prompt_tokens_processed =
        std::min(prompt_len, e.start_position + static_cast<int>(e.token_ids.size()));
    progress.usage.prompt_tokens = prompt_len;
    out.emplace_back(it->second->on_chunk, std::move(progress));
  }
  absl::flat_hash_map<uint64_t, bool> by_length;
  for (const scheduler::FinishedSequence& f : *finished) by_length[f.id] = true;
  for (size_t i = 0; i < answers->size(); ++i) {
    auto it = requests.find(step.sampled_ids[i]);
    if (it == requests.end()) continue;
    const bool length_done = by_length.contains(step.sampled_ids[i]);
    if (Accept(*it->second, (*answers)[i], length_done, out) && !length_done) {
      (void)scheduler->Finish(step.sampled_ids[i]);
    }
  }
}

absl::Status Coordinator::Impl::Isolate(const InFlightStep& step, StepIsolation* isolation) {
  std::vector<SampleResult> one;
  size_t sample = 0;
  for (size_t i = 0; i < step.entries.size(); ++i) {
    const bool samples = step.entries[i].logits == LogitsWanted::kLast;
    std::span<const SampleSpec> spec;
    if (samples) spec = std::span<const SampleSpec>(&step.specs[sample], 1);
    const absl::Status status =
        engine->Step(std::span<const BatchEntry>(&step.entries[i], 1), spec, &one);
    if (status.code() == absl::StatusCode::kUnavailable) return status;
    if (!status.ok()) isolation->failed[step.plan.entries[i].seq_id] = status;
    if (samples) {
      isolation->results.push_back(status.ok() && one.size() == 1 ? one[0] : SampleResult{});
      ++sample;
    }
  }
  return absl::OkStatus();
}

void Coordinator::Impl::Loop() {
  Callbacks out;
  std::vector<SampleResult> results;
  // A pipeline of S stages takes S steps at once: S micro-batches keep every stage busy.
  const int depth = std::max(1, engine->max_steps_in_flight());
  std::deque<std::unique_ptr<InFlightStep>> flight;
  // Callbacks run after the lock: a callback may call Cancel or Submit.
  auto deliver = [&](std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    for (auto& [cb, chunk] : out) cb(std::move(chunk));
    out.clear();
  };
  // After a failed step the others in flight are answered and dropped (the failure path
  // recomputes or fails their sequences), so that engine and scheduler agree again.
  auto drain = [&] {
    std::vector<SampleResult> ignored;
    for (size_t i = 0; i < flight.size(); ++i) (void)engine->FinishStep(&ignored);
    flight.clear();
  };
  // A step's outcome applied; a failed step of several entries (not a lost worker) is first
  // taken apart (Isolate), so that one sequence's bad input or failure ends that sequence alone.
  auto complete = [&](const InFlightStep& step, absl::Status status) {
    StepIsolation isolation;
    bool isolated = false;
    if (!status.ok() && status.code() != absl::StatusCode::kUnavailable &&
        step.entries.size() > 1) {
      std::cerr << "bitserve: a step of " << step.entries.size()
                << " sequences failed; running them one by one to find the cause: "
                << status.message() << std::endl;
      const absl::Status lost = Isolate(step, &isolation);
      if (lost.ok()) {
        isolated = true;
      } else {
        status = lost;
      }
    }
    std::unique_lock<std::mutex> lock(mu);
    Complete(step, status, results, out, isolated ? &isolation : nullptr);
    PublishState();
    deliver(lock);
  };
  while (true) {
    std::unique_ptr<InFlightStep> next;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (flight.empty()) {
        wake.wait(lock,
                  [&] { return stopping || !cancelled.empty() || scheduler->has_unfinished(); });
      }
      if (stopping) {
        for (auto& [id, r] : requests) {
          GenerationChunk chunk;
          chunk.final = true;
          chunk.finish_reason = "cancelled";
          chunk.status = absl::CancelledError("the server shut down");
          chunk.usage = {static_cast<int>(r->prompt.size()), static_cast<int>(r->output.size())};
          out.emplace_back(std::move(r->on_chunk), std::move(chunk));
        }
        requests.clear();
        idle.notify_all();
        deliver(lock);
        return;
      }
      for (const auto& [id, why] : cancelled) {
        auto it = requests.find(id);
        if (it == requests.end()) continue;
        (void)scheduler->Cancel(id);
        Finish(*it->second, "cancelled", why, {}, out);
      }
      cancelled.clear();
      if (static_cast<int>(flight.size()) < depth) {
        const int active = scheduler->num_running() + scheduler->num_waiting();
        const int cap = depth == 1 ? std::numeric_limits<int>::max()
                                   : std::max(1, (active + depth - 1) / depth);
        scheduler::StepPlan plan = scheduler->Schedule(cap);
        if (!plan.empty()) {
          next = std::make_unique<InFlightStep>();
          next->plan = std::move(plan);
          Prepare(*next);
        }
      }
      PublishState();
      deliver(lock);
    }
    if (next != nullptr) {
      // The step runs without the lock: Submit and Cancel go on meanwhile.
      next->start = Clock::now();
      if (depth == 1) {
        absl::Status status = engine->Step(next->entries, next->specs, &results);
        if (status.ok()) ReportExpertLoad(*engine);
        complete(*next, status);
        continue;
      }
      absl::Status started = engine->StartStep(next->entries, next->specs);
      if (!started.ok()) {
        drain();
        complete(*next, started);
        continue;
      }
      flight.push_back(std::move(next));
      if (static_cast<int>(flight.size()) < depth) continue;  // start another micro-batch first
    }
    if (flight.empty()) continue;
    std::unique_ptr<InFlightStep> oldest = std::move(flight.front());
    flight.pop_front();
    absl::Status status = engine->FinishStep(&results);
    if (!status.ok()) drain();
    complete(*oldest, status);
  }
}

}  // namespace bitserve::rpc
