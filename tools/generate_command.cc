// bitserve generate --model DIR (--prompt TEXT | --chat TEXT | --prompt-ids 1,2,3) [sampling flags]
//                   [--max-tokens N] [--stop S]... [--ignore-eos] [--json]
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/checkpoint/generation_config.h"
#include "runtime/generation/generation.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/model_tokenizer.h"
#include "tools/command_line.h"
#include "tools/generation_flags.h"
#include "tools/pipeline_flags.h"

namespace bitserve::cli {
namespace {

struct Args {
  std::string model, device = "cpu", kv_dtype, kv_rotation, lm_head_dtype, load_format;
  GenerationFlags gen;
  PipelineFlags pipeline;
};

absl::StatusOr<std::vector<int32_t>> PromptTokens(const Args& args, const Tokenizer* tokenizer) {
  const GenerationFlags& gen = args.gen;
  if (!gen.prompt_ids.empty()) return ParseTokenIds(gen.prompt_ids, "--prompt-ids");
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        args.model, " has no tokenizer.json: text prompts need one; use --prompt-ids"));
  }
  if (!gen.chat.empty()) {
    ChatMessage message{"user", gen.chat};
    return ApplyChatTemplate(*tokenizer, {&message, 1});
  }
  EncodeOptions options;
  options.add_bos = tokenizer->add_bos_default();
  return tokenizer->Encode(gen.prompt, options);
}

absl::Status Run(const Args& args) {
  const GenerationFlags& gen = args.gen;
  RETURN_IF_ERROR(gen.Check());
  GenerateRequest request;
  request.sampling = gen.Sampling();
  RETURN_IF_ERROR(request.sampling.Validate());
  request.max_new_tokens = gen.max_tokens;
  request.ignore_eos = gen.ignore_eos;
  request.stop_strings = gen.stop;

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(args.model));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadModelTokenizer(args.model, config));
  ASSIGN_OR_RETURN(request.prompt, PromptTokens(args, tokenizer.get()));
  EngineOptions options;
  options.device = args.device;
  ASSIGN_OR_RETURN(options.kv_dtype, ParseKvDtypeFlag(args.kv_dtype));
  ASSIGN_OR_RETURN(options.kv_rotation, ParseKvRotationFlag(args.kv_rotation));
  ASSIGN_OR_RETURN(options.lm_head_dtype, ParseLmHeadDtypeFlag(args.lm_head_dtype));
  ASSIGN_OR_RETURN(options.load_format, ParseLoadFormatFlag(args.load_format));
  options.max_sequences = 1;
  options.max_batch_tokens = std::max<int>(options.max_batch_tokens, request.prompt.size());
  RETURN_IF_ERROR(args.pipeline.Apply(&options));
  ASSIGN_OR_RETURN(auto engine, LoadEngine(args.model, options));
  ASSIGN_OR_RETURN(GenerationConfig generation, LoadGenerationConfig(args.model, engine->config()));
  request.stop_token_ids = generation.eos_token_ids;
  const auto loaded = Clock::now();

  std::optional<Clock::time_point> first_token;
  GenerateStream stream = [&](int32_t token, const std::string& text) {
    if (!first_token && token >= 0) first_token = Clock::now();
    if (gen.json) return;
    // Text when there is a tokenizer, else the token ids as they come.
    if (tokenizer) {
      std::cout << text << std::flush;
    } else if (token >= 0) {
      std::cout << token << " " << std::flush;
    }
  };
  ASSIGN_OR_RETURN(GenerateResult result, Generate(*engine, tokenizer.get(), request, {}, stream));
  const auto done = Clock::now();
  if (gen.json) {
    GenerationOutput output;
    output.token_ids = result.tokens;
    output.text = result.text;
    output.finish_reason = result.finish_reason;
    output.prompt_tokens = static_cast<int64_t>(request.prompt.size());
    output.seed = result.seed;
    output.logprobs = result.samples;
    std::cout << GenerationJson(output, request.sampling).dump() << std::endl;
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
  AddGenerationFlags(cmd, &args->gen);
  cmd->add_option("--device", args->device, "cpu or cuda[:N]");
  args->pipeline.Add(cmd);
  AddKvDtypeOption(cmd, &args->kv_dtype);
  AddKvRotationOption(cmd, &args->kv_rotation);
  AddLmHeadDtypeOption(cmd, &args->lm_head_dtype);
  AddLoadFormatOption(cmd, &args->load_format);
  cmd->callback([args] { RunOrExit("generate", [&] { return Run(*args); }); });
}

}  // namespace bitserve::cli
