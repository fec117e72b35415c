// bitserve generate --model DIR (--prompt TEXT | --chat TEXT | --prompt-ids 1,2,3) [sampling flags]
//                   [--max-tokens N] [--stop S]... [--ignore-eos] [--json]
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/chat_template.h"
#include "runtime/generation.h"
#include "runtime/generation_config.h"
#include "tools/command_line.h"

namespace bitserve::cli {
namespace {

struct Args {
  std::string model, prompt, chat, prompt_ids, device = "cpu", kv_dtype;
  int max_tokens = 16;
  SamplingParams sampling;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false, json = false;
};

// The model's tokenizer, when the checkpoint has one.
absl::StatusOr<std::unique_ptr<Tokenizer>> MaybeLoadTokenizer(const std::filesystem::path& model) {
  std::error_code ec;
  if (!std::filesystem::exists(model / "tokenizer.json", ec)) return std::unique_ptr<Tokenizer>();
  return Tokenizer::Load(model);
}

absl::StatusOr<std::vector<int32_t>> PromptTokens(const Args& args, const Tokenizer* tokenizer) {
  if (!args.prompt_ids.empty()) return ParseTokenIds(args.prompt_ids, "--prompt-ids");
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        args.model, " has no tokenizer.json: text prompts need one; use --prompt-ids"));
  }
  if (!args.chat.empty()) {
    ChatMessage message{"user", args.chat};
    return ApplyChatTemplate(*tokenizer, {&message, 1});
  }
  EncodeOptions options;
  options.add_bos = tokenizer->add_bos_default();
  return tokenizer->Encode(args.prompt, options);
}

absl::Status Run(const Args& args, bool seed_given) {
  if (args.prompt.empty() && args.chat.empty() && args.prompt_ids.empty()) {
    return absl::InvalidArgumentError("one of --prompt, --chat or --prompt-ids is required");
  }
  if (args.max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0");
  GenerateRequest request;
  request.sampling = args.sampling;
  if (seed_given) request.sampling.seed = args.seed;
  RETURN_IF_ERROR(request.sampling.Validate());
  request.max_new_tokens = args.max_tokens;
  request.ignore_eos = args.ignore_eos;
  request.stop_strings = args.stop;

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, MaybeLoadTokenizer(args.model));
  ASSIGN_OR_RETURN(request.prompt, PromptTokens(args, tokenizer.get()));
  EngineOptions options;
  options.device = args.device;
  ASSIGN_OR_RETURN(options.kv_dtype, ParseKvDtypeFlag(args.kv_dtype));
  options.max_sequences = 1;
  options.max_batch_tokens = std::max<int>(options.max_batch_tokens, request.prompt.size());
  ASSIGN_OR_RETURN(auto engine, LoadEngine(args.model, options));
  ASSIGN_OR_RETURN(GenerationConfig generation, LoadGenerationConfig(args.model, engine->config()));
  request.stop_token_ids = generation.eos_token_ids;
  const auto loaded = Clock::now();

  std::optional<Clock::time_point> first_token;
  GenerateStream stream = [&](int32_t token, const std::string& text) {
    if (!first_token && token >= 0) first_token = Clock::now();
    if (args.json) return;
    // Text when there is a tokenizer, else the token ids as they come.
    if (tokenizer) {
      std::cout << text << std::flush;
    } else if (token >= 0) {
      std::cout << token << " " << std::flush;
    }
  };
  ASSIGN_OR_RETURN(GenerateResult result, Generate(*engine, tokenizer.get(), request, {}, stream));
  const auto done = Clock::now();
  if (args.json) {
    nlohmann::json out = {{"token_ids", result.tokens},
                          {"text", result.text},
                          {"finish_reason", result.finish_reason},
                          {"prompt_tokens", request.prompt.size()},
                          {"completion_tokens", result.tokens.size()}};
    if (request.sampling.temperature > 0) out["seed"] = result.seed;
    if (request.sampling.top_logprobs > 0) {
      nlohmann::json logprobs = nlohmann::json::array();
      for (const SampleResult& s : result.samples) {
        nlohmann::json top = nlohmann::json::array();
        for (const TokenLogprob& t : s.top_logprobs) top.push_back({{"token_id", t.token}, {"logprob", t.logprob}});
        logprobs.push_back({{"token_id", s.token}, {"logprob", s.logprob}, {"top", top}});
      }
      out["logprobs"] = logprobs;
    }
    std::cout << out.dump() << std::endl;
  } else {
    std::cout << "\n[" << result.finish_reason << "]" << std::endl;
  }
  auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
  const auto first = first_token.value_or(done);
  const double decode_s = seconds(done - first);
  const size_t decoded = result.tokens.empty() ? 0 : result.tokens.size() - 1;
  std::cerr << "generate: load " << seconds(loaded - start) << " s, prefill of "
            << request.prompt.size() << " tokens " << seconds(first - loaded) << " s, decode of "
            << decoded << " tokens " << decode_s << " s ("
            << (decode_s > 0 ? decoded / decode_s : 0.0) << " tokens/s)";
  if (request.sampling.temperature > 0) std::cerr << ", seed " << result.seed;
  std::cerr << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddGenerateCommand(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text for one prompt (streams it)");
  cmd->add_option("--model", args->model, "Checkpoint directory")->required();
  auto* prompt = cmd->add_option("--prompt", args->prompt, "Prompt text (BOS added as the tokenizer says)");
  auto* chat = cmd->add_option("--chat", args->chat, "A user message, in the model's chat template");
  auto* ids = cmd->add_option("--prompt-ids", args->prompt_ids, "Comma-separated prompt token ids");
  prompt->excludes(chat)->excludes(ids);
  chat->excludes(ids);
  cmd->add_option("--max-tokens", args->max_tokens, "Most tokens to generate (default 16)");
  SamplingParams& s = args->sampling;
  cmd->add_option("--temperature", s.temperature, "0 is greedy (default)");
  cmd->add_option("--top-k", s.top_k, "Sample among the k most likely tokens (0: all)");
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)");
  cmd->add_option("--min-p", s.min_p, "Drop tokens below min_p x the top probability (0: off)");
  cmd->add_option("--repetition-penalty", s.repetition_penalty, "Over prompt and output (1: off)");
  cmd->add_option("--presence-penalty", s.presence_penalty, "Over output tokens (0: off)");
  cmd->add_option("--frequency-penalty", s.frequency_penalty, "Over output tokens (0: off)");
  cmd->add_option("--logprobs", s.top_logprobs, "With --json: logprobs and this many alternatives");
  auto* seed = cmd->add_option("--seed", args->seed, "Sampling seed (default: random, printed)");
  cmd->add_option("--stop", args->stop, "Stop string (repeatable); not included in the output");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Do not stop at the model's stop tokens");
  cmd->add_flag("--json", args->json, "Print one JSON object instead of streaming");
  cmd->add_option("--device", args->device, "cpu or cuda[:N]");
  AddKvDtypeOption(cmd, &args->kv_dtype);
  cmd->callback([args, seed] { RunOrExit("generate", [&] { return Run(*args, seed->count() > 0); }); });
}

}  // namespace bitserve::cli
