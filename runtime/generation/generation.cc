#include "runtime/generation/generation.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/text/detokenizer.h"
#include "runtime/text/stop_strings.h"

namespace bitserve {

int32_t ArgMax(std::span<const float> values) {
  return static_cast<int32_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

std::vector<int32_t> IdentityBlockTable(const Engine& engine) {
  const int64_t blocks =
      std::min<int64_t>((engine.max_model_len() + engine.block_size() - 1) / engine.block_size(),
                        engine.num_kv_blocks());
  std::vector<int32_t> table(blocks);
  for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(b);
  return table;
}

absl::StatusOr<GenerateResult> Generate(Engine& engine, const Tokenizer* tokenizer,
                                        const GenerateRequest& request,
                                        std::span<const int32_t> block_table,
                                        const GenerateStream& stream,
                                        std::vector<float>* step_logits) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt has no tokens");
  if (request.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  RETURN_IF_ERROR(request.sampling.Validate());
  RETURN_IF_ERROR(StopStringMatcher::Validate(request.stop_strings));
  if (!request.stop_strings.empty() && tokenizer == nullptr) {
    return absl::InvalidArgumentError("stop strings need a tokenizer; the model has none");
  }
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  const std::vector<int32_t> identity =
      block_table.empty() ? IdentityBlockTable(engine) : std::vector<int32_t>{};
  if (block_table.empty()) block_table = identity;
  const int64_t max_len =
      std::min<int64_t>(engine.max_model_len(), int64_t{engine.block_size()} * block_table.size());
  if (prompt_len > max_len) {
    return absl::OutOfRangeError(
        absl::StrCat("prompt has ", prompt_len, " tokens; the limit is ", max_len));
  }
  const std::vector<int> stops = request.ignore_eos ? std::vector<int>{} : request.stop_token_ids;
  std::optional<IncrementalDetokenizer> detokenizer;
  if (tokenizer) detokenizer.emplace(*tokenizer);
  ASSIGN_OR_RETURN(StopStringMatcher matcher,
                   StopStringMatcher::Create(request.stop_strings, request.include_stop_string));
  Sampler sampler(request.sampling, request.prompt);
  if (step_logits) step_logits->clear();

  GenerateResult result;
  result.seed = sampler.seed();
  result.finish_reason = "length";
  std::vector<float> logits;
  std::vector<SampleResult> step_samples;
  std::vector<int32_t> next(request.prompt);
  int64_t position = 0;
  absl::Status status;
  bool finished = false;
  while (!finished && static_cast<int>(result.tokens.size()) < request.max_new_tokens) {
    const BatchEntry entry{static_cast<int32_t>(position), next, block_table, LogitsWanted::kLast};
    const SampleSpec spec{&request.sampling, result.seed,
                          static_cast<int64_t>(result.tokens.size()), request.prompt,
                          result.tokens};
    if (step_logits) {
      // The caller wants the logits: sample on the host from the copy.
      status = engine.Forward({&entry, 1}, &logits);
      if (!status.ok()) break;
      step_logits->insert(step_logits->end(), logits.begin(), logits.end());
      step_samples.assign(1, sampler.SampleFor(spec, logits));
    } else {
      status = engine.Step({&entry, 1}, {&spec, 1}, &step_samples);
      if (!status.ok()) break;
    }
    position += static_cast<int64_t>(next.size());
    SampleResult sample = std::move(step_samples[0]);
    const int32_t token = sample.token;
    result.tokens.push_back(token);
    result.samples.push_back(std::move(sample));
    std::string piece;
    if (detokenizer) {
      StopStringMatcher::Output out = matcher.Push(detokenizer->Push(token));
      piece = std::move(out.text);
      if (out.stopped) {
        result.finish_reason = "stop";
        finished = true;
      }
    }
    if (!finished && std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.finish_reason = "eos";
      finished = true;
    }
    // The next step needs room for this token in the cache: stop at the context limit.
    if (!finished && position + 1 > max_len) finished = true;
    if (finished && detokenizer && !matcher.stopped()) {
      piece += matcher.Push(detokenizer->Flush()).text;
      if (!matcher.stopped()) piece += matcher.Flush();
    }
    result.text += piece;
    if (stream) stream(token, piece);
    next.assign(1, token);
  }
  if (!finished && detokenizer && !matcher.stopped()) {
    // Ended by max_new_tokens: release what the detokenizer and the matcher still hold.
    std::string tail = matcher.Push(detokenizer->Flush()).text;
    if (!matcher.stopped()) tail += matcher.Flush();
    result.text += tail;
    if (stream && !tail.empty()) stream(-1, tail);
  }
  RETURN_IF_ERROR(status);
  return result;
}

}  // namespace bitserve
