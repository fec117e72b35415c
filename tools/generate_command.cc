// bitserve generate --model DIR --prompt-ids 1,2,3 [--max-tokens N] [--ignore-eos] [--json]
#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/generation.h"
#include "tools/command_line.h"

namespace bitserve::cli {

void AddGenerateCommand(CLI::App& app) {
  struct Args {
    std::string model, prompt, chat, prompt_ids, device = "cpu";
    int max_tokens = 16;
    double temperature = 0.0, top_p = 1.0;
    int top_k = 0;
    uint64_t seed = 0;
    bool ignore_eos = false, json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate tokens for one prompt");
  cmd->add_option("--model", args->model, "Checkpoint directory")->required();
  auto* prompt = cmd->add_option("--prompt", args->prompt, "Prompt text");
  auto* chat = cmd->add_option("--chat", args->chat, "A user chat message");
  auto* ids = cmd->add_option("--prompt-ids", args->prompt_ids, "Comma-separated prompt token ids");
  prompt->excludes(chat)->excludes(ids);
  chat->excludes(ids);
  cmd->add_option("--max-tokens", args->max_tokens, "Most tokens to generate");
  cmd->add_option("--temperature", args->temperature, "0 is greedy");
  cmd->add_option("--top-k", args->top_k, "Sample among the k most likely tokens (0: all)");
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling mass");
  cmd->add_option("--seed", args->seed, "Sampling seed");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Do not stop at end-of-sequence tokens");
  cmd->add_flag("--json", args->json, "Print one JSON object instead of streaming");
  cmd->add_option("--device", args->device, "cpu or cuda[:N]");
  cmd->callback([args] {
    RunOrExit("generate", [&]() -> absl::Status {
      RETURN_IF_ERROR(CheckDevice(args->device));
      if (args->prompt_ids.empty()) {
        return absl::UnimplementedError(
            "text prompts (--prompt, --chat) need the tokenizer, which this build does not have "
            "yet; use --prompt-ids");
      }
      if (args->temperature != 0.0 || args->top_k != 0 || args->top_p != 1.0) {
        return absl::UnimplementedError(
            "sampling is not implemented yet; use --temperature 0 (greedy)");
      }
      if (args->max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0");
      GenerateRequest request;
      ASSIGN_OR_RETURN(request.prompt, ParseTokenIds(args->prompt_ids, "--prompt-ids"));
      request.max_new_tokens = args->max_tokens;
      request.ignore_eos = args->ignore_eos;
      EngineOptions options;
      options.max_sequences = 1;
      using Clock = std::chrono::steady_clock;
      const auto start = Clock::now();
      ASSIGN_OR_RETURN(auto engine, CpuEngine::Load(args->model, options));
      const auto loaded = Clock::now();
      auto first_token = loaded;
      std::function<void(int32_t)> stream = [&](int32_t token) {
        if (first_token == loaded) first_token = Clock::now();
        if (!args->json) std::cout << token << " " << std::flush;
      };
      ASSIGN_OR_RETURN(GenerateResult result, GenerateGreedy(*engine, request, 0, stream));
      const auto done = Clock::now();
      auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
      const double decode_s = seconds(done - first_token);
      const size_t decoded = result.tokens.empty() ? 0 : result.tokens.size() - 1;
      std::cerr << "generate: load " << seconds(loaded - start) << " s, prefill of "
                << request.prompt.size() << " tokens " << seconds(first_token - loaded)
                << " s, decode of " << decoded << " tokens " << decode_s << " s ("
                << (decode_s > 0 ? decoded / decode_s : 0.0) << " tokens/s)" << std::endl;
      if (args->json) {
        nlohmann::json out = {{"token_ids", result.tokens},
                              {"text", ""},
                              {"finish_reason", result.finish_reason},
                              {"prompt_tokens", request.prompt.size()},
                              {"completion_tokens", result.tokens.size()}};
        std::cout << out.dump() << std::endl;
      } else {
        std::cout << "\n[" << result.finish_reason << "]" << std::endl;
      }
      return absl::OkStatus();
    });
  });
}

}  // namespace bitserve::cli
