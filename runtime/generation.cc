#include "runtime/generation.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/detokenizer.h"
#include "runtime/stop_strings.h"

namespace bitserve {

int32_t ArgMax(std::span<const float> values) {
  return static_cast<int32_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

absl::StatusOr<GenerateResult> Generate(CpuEngine& engine, const Tokenizer* tokenizer,
                                        const GenerateRequest& request, int slot,
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
  if (prompt_len > engine.max_seq_len()) {
    return absl::OutOfRangeError(absl::StrCat("prompt has ", prompt_len, " tokens; the limit is ",
                                              engine.max_seq_len()));
  }
  const std::vector<int> stops =
      request.ignore_eos ? std::vector<int>{} : request.stop_token_ids;
  std::optional<IncrementalDetokenizer> detokenizer;
  if (tokenizer) detokenizer.emplace(*tokenizer);
  ASSIGN_OR_RETURN(StopStringMatcher matcher,
                   StopStringMatcher::Create(request.stop_strings, request.include_stop_string));
  Sampler sampler(request.sampling, request.prompt);
  if (step_logits) step_logits->clear();

  GenerateResult result;
  result.seed = sampler.seed();
  result.finish_reason = "length";
  engine.Release(slot);
  std::vector<float> logits;
  std::vector<int32_t> next(request.prompt);
  absl::Status status;
  bool finished = false;
  while (!finished && static_cast<int>(result.tokens.size()) < request.max_new_tokens) {
    SequenceChunk chunk{slot, next, false};
    status = engine.Forward({&chunk, 1}, &logits);
    if (!status.ok()) break;
    if (step_logits) step_logits->insert(step_logits->end(), logits.begin(), logits.end());
    SampleResult sample = sampler.Sample(logits);
    sampler.Accept(sample.token);
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
    if (!finished && engine.length(slot) + 1 > engine.max_seq_len()) finished = true;
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
  engine.Release(slot);
  RETURN_IF_ERROR(status);
  return result;
}

}  // namespace bitserve
