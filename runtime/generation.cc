#include "runtime/generation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace bitserve {

int32_t ArgMax(std::span<const float> values) {
  return static_cast<int32_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

absl::StatusOr<GenerateResult> GenerateGreedy(CpuEngine& engine, const GenerateRequest& request,
                                              int slot, const std::function<void(int32_t)>& on_token,
                                              std::vector<float>* step_logits) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt has no tokens");
  if (request.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len > engine.max_seq_len()) {
    return absl::OutOfRangeError(absl::StrCat("prompt has ", prompt_len, " tokens; the limit is ",
                                              engine.max_seq_len()));
  }
  std::vector<int> stops = request.stop_token_ids;
  if (!request.ignore_eos) {
    const auto& eos = engine.config().eos_token_ids;
    stops.insert(stops.end(), eos.begin(), eos.end());
  }
  if (step_logits) step_logits->clear();

  GenerateResult result;
  result.finish_reason = "length";
  engine.Release(slot);
  std::vector<float> logits;
  std::vector<int32_t> next(request.prompt);
  absl::Status status;
  while (static_cast<int>(result.tokens.size()) < request.max_new_tokens) {
    SequenceChunk chunk{slot, next, false};
    status = engine.Forward({&chunk, 1}, &logits);
    if (!status.ok()) break;
    const int32_t token = ArgMax(logits);
    if (step_logits) step_logits->insert(step_logits->end(), logits.begin(), logits.end());
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.finish_reason = "eos";
      break;
    }
    // The next step needs room for this token in the cache: stop at the context limit.
    if (engine.length(slot) + 1 > engine.max_seq_len()) break;
    next.assign(1, token);
  }
  engine.Release(slot);
  RETURN_IF_ERROR(status);
  return result;
}

}  // namespace bitserve
