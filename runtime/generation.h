// Token generation on top of an engine: prefill the prompt, then decode one token at a time.
// Greedy only for now; sampling, stop strings and detokenization come with the tokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/cpu_engine.h"

namespace bitserve {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 16;
  bool ignore_eos = false;
  std::vector<int> stop_token_ids;  // besides the model's eos ids (unless ignore_eos)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, without the prompt
  std::string finish_reason;    // "eos" (a stop token), "length" (max tokens or context)
};

// Index of the largest value; the first one on ties, as torch.argmax.
int32_t ArgMax(std::span<const float> values);

// Runs one sequence in `slot` (released afterwards). `on_token` sees each token as it is chosen;
// `step_logits`, when given, receives the logits every token was chosen from ([new, vocab]).
absl::StatusOr<GenerateResult> GenerateGreedy(CpuEngine& engine, const GenerateRequest& request,
                                              int slot = 0,
                                              const std::function<void(int32_t)>& on_token = nullptr,
                                              std::vector<float>* step_logits = nullptr);

}  // namespace bitserve
