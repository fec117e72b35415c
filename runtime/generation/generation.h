// One sequence's generation on an engine: prefill the prompt, then decode token by token with
// per-request sampling, stop tokens, stop strings and incremental detokenization.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/sampling.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 16;
  SamplingParams sampling;  // default: greedy
  std::vector<int>
      stop_token_ids;  // e.g. generation_config.json's eos ids; ignored with ignore_eos
  bool ignore_eos = false;
  std::vector<std::string> stop_strings;  // need a tokenizer; matched across token boundaries
  bool include_stop_string = false;
};

struct GenerateResult {
  std::vector<int32_t> tokens;        // generated, without the prompt (a final stop token included)
  std::string text;                   // detokenized, special tokens skipped, stop string removed
  std::string finish_reason;          // "eos" (stop token), "stop" (stop string), "length"
  std::vector<SampleResult> samples;  // per token: its logprob and top alternatives
  uint64_t seed = 0;                  // the sampling seed used (to reproduce the output)
};

// Called as the output grows: the new token and the text that became final with it (may be
// empty). A last call with token -1 carries text released at the end without a new token.
using GenerateStream = std::function<void(int32_t token, const std::string& text)>;

// Index of the largest value; the first one on ties, as torch.argmax.
int32_t ArgMax(std::span<const float> values);

// Blocks 0, 1, ... covering max_model_len (or all the engine has): one sequence alone.
std::vector<int32_t> IdentityBlockTable(const Engine& engine);

// Runs one sequence whose KV cache lives in `block_table` (empty: IdentityBlockTable) with
// sampling on the engine's device. `tokenizer` may be null when there are no stop strings and no
// text is wanted. `step_logits`, when given, receives the logits every token was chosen from
// ([new tokens, vocab]); then sampling happens on the host.
absl::StatusOr<GenerateResult> Generate(Engine& engine, const Tokenizer* tokenizer,
                                        const GenerateRequest& request,
                                        std::span<const int32_t> block_table = {},
                                        const GenerateStream& stream = nullptr,
                                        std::vector<float>* step_logits = nullptr);

}  // namespace bitserve
