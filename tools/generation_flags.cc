#include "tools/generation_flags.h"

namespace bitserve::cli {

absl::Status GenerationFlags::Check() const {
  if (prompt.empty() && chat.empty() && prompt_ids.empty()) {
    return absl::InvalidArgumentError("one of --prompt, --chat or --prompt-ids is required");
  }
  if (max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0");
  return absl::OkStatus();
}

SamplingParams GenerationFlags::Sampling() const {
  SamplingParams s = sampling;
  if (seed_option != nullptr && seed_option->count() > 0) s.seed = seed;
  return s;
}

void AddGenerationFlags(CLI::App* cmd, GenerationFlags* flags) {
  auto* prompt =
      cmd->add_option("--prompt", flags->prompt, "Prompt text (BOS added as the tokenizer says)");
  auto* chat =
      cmd->add_option("--chat", flags->chat, "A user message, in the model's chat template");
  auto* ids =
      cmd->add_option("--prompt-ids", flags->prompt_ids, "Comma-separated prompt token ids");
  prompt->excludes(chat)->excludes(ids);
  chat->excludes(ids);
  cmd->add_option("--max-tokens", flags->max_tokens, "Most tokens to generate (default 16)");
  SamplingParams& s = flags->sampling;
  cmd->add_option("--temperature", s.temperature, "0 is greedy (default)");
  cmd->add_option("--top-k", s.top_k, "Sample among the k most likely tokens (0: all)");
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)");
  cmd->add_option("--min-p", s.min_p, "Drop tokens below min_p x the top probability (0: off)");
  cmd->add_option("--repetition-penalty", s.repetition_penalty, "Over prompt and output (1: off)");
  cmd->add_option("--presence-penalty", s.presence_penalty, "Over output tokens (0: off)");
  cmd->add_option("--frequency-penalty", s.frequency_penalty, "Over output tokens (0: off)");
  cmd->add_option("--logprobs", s.top_logprobs, "With --json: logprobs and this many alternatives");
  flags->seed_option =
      cmd->add_option("--seed", flags->seed, "Sampling seed (default: random, printed)");
  cmd->add_option("--stop", flags->stop, "Stop string (repeatable); not included in the output");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Do not stop at the model's stop tokens");
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of streaming");
}

nlohmann::json GenerationJson(const GenerationOutput& output, const SamplingParams& sampling) {
  nlohmann::json out = {{"token_ids", output.token_ids},
                        {"text", output.text},
                        {"finish_reason", output.finish_reason},
                        {"prompt_tokens", output.prompt_tokens},
                        {"completion_tokens", output.token_ids.size()}};
  if (sampling.temperature > 0) out["seed"] = output.seed;
  if (sampling.top_logprobs > 0) {
    nlohmann::json logprobs = nlohmann::json::array();
    for (const SampleResult& s : output.logprobs) {
      nlohmann::json top = nlohmann::json::array();
      for (const TokenLogprob& t : s.top_logprobs) {
        top.push_back({{"token_id", t.token}, {"logprob", t.logprob}});
      }
      logprobs.push_back({{"token_id", s.token}, {"logprob", s.logprob}, {"top", top}});
    }
    out["logprobs"] = logprobs;
  }
  return out;
}

}  // namespace bitserve::cli
