// The generation flags that `bitserve generate` (in-process) and `bitserve client generate`
// (through a server) share, and the one JSON object both print with --json. Defined once so that
// the two commands stay interchangeable in scripts: same flags, same defaults, same output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "kernels/cpu/sampling.h"
#include "nlohmann/json.hpp"

namespace bitserve::cli {

struct GenerationFlags {
  std::string prompt, chat, prompt_ids;  // exactly one is given
  int max_tokens = 16;
  SamplingParams sampling;  // without the seed: see Sampling()
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false, json = false;
  const CLI::Option* seed_option = nullptr;  // set by AddGenerationFlags

  // What the command line can check before any model is at hand: one prompt flag, and
  // --max-tokens >= 0. Sampling ranges are checked by whoever runs the request.
  absl::Status Check() const;
  // The sampling parameters with --seed applied when it was given (absent: a random seed).
  SamplingParams Sampling() const;
};

// Adds --prompt | --chat | --prompt-ids, --max-tokens, the sampling flags, --logprobs, --seed,
// --stop, --ignore-eos and --json to `cmd`, writing into `flags` (which must outlive `cmd`).
void AddGenerationFlags(CLI::App* cmd, GenerationFlags* flags);

// One finished generation, whichever way it ran.
struct GenerationOutput {
  std::vector<int32_t> token_ids;
  std::string text;
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  uint64_t seed = 0;
  std::vector<SampleResult> logprobs;  // one per token when logprobs were asked
};

// {"token_ids", "text", "finish_reason", "prompt_tokens", "completion_tokens"}, plus "seed" when
// `sampling` samples (temperature > 0) and "logprobs" when it asks for top_logprobs.
nlohmann::json GenerationJson(const GenerationOutput& output, const SamplingParams& sampling);

}  // namespace bitserve::cli
