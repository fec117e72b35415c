// bitserve perplexity --model DIR --input FILE [--json] [--device D] [--kv-dtype T] [--context N]
//                    [--stride N]:
// held-out perplexity of a text file with the strided sliding window of runtime/perplexity.h,
// over ids = [BOS] + encode(text) (no BOS when config.json has no bos_token_id).
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/generation/perplexity.h"
#include "runtime/text/model_tokenizer.h"
#include "tools/command_line.h"
#include "tools/pipeline_flags.h"

namespace bitserve::cli {

void AddPerplexityCommand(CLI::App& app) {
  struct Args {
    std::string model, input, device = "cpu", kv_dtype, kv_rotation, lm_head_dtype;
    int64_t context = 0, stride = 0;
    bool json = false;
    PipelineFlags pipeline;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("perplexity", "Perplexity of a text file (strided sliding window)");
  cmd->add_option("--model", args->model, "Checkpoint directory (with tokenizer.json)")->required();
  cmd->add_option("--input", args->input, "UTF-8 text file")->required();
  cmd->add_option("--device", args->device, "cpu or cuda[:N]");
  AddKvDtypeOption(cmd, &args->kv_dtype);
  AddKvRotationOption(cmd, &args->kv_rotation);
  AddLmHeadDtypeOption(cmd, &args->lm_head_dtype);
  cmd->add_option("--context", args->context,
                  "Tokens per window (default: the model's context length)");
  cmd->add_option("--stride", args->stride, "Window start step (default: context / 2)");
  cmd->add_flag("--json", args->json, "Print {\"tokens\": N, \"nll\": X, \"ppl\": Y}");
  args->pipeline.Add(cmd);
  cmd->callback([args] {
    RunOrExit("perplexity", [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string text, ReadFileToString(args->input));
      ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(args->model));
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                       LoadModelTokenizer(args->model, config));
      if (tokenizer == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat(args->model, " has no tokenizer.json: perplexity reads text"));
      }
      const int64_t context = args->context > 0 ? args->context : config.context_length();
      const int64_t stride = args->stride > 0 ? args->stride : std::max<int64_t>(1, context / 2);
      if (args->context < 0 || args->stride < 0) {
        return absl::InvalidArgumentError("--context and --stride must be positive");
      }
      if (context > config.context_length()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--context ", context, " exceeds the model's context length ", config.context_length(),
            " (max_position_embeddings ", config.max_position_embeddings,
            config.rope_scaling ? ", extended by rope_scaling)" : ")"));
      }
      std::vector<int32_t> ids;
      if (config.bos_token_id >= 0) ids.push_back(config.bos_token_id);
      const std::vector<int32_t> body = tokenizer->Encode(text);
      ids.insert(ids.end(), body.begin(), body.end());

      EngineOptions options;
      options.device = args->device;
      ASSIGN_OR_RETURN(options.kv_dtype, ParseKvDtypeFlag(args->kv_dtype));
      ASSIGN_OR_RETURN(options.kv_rotation, ParseKvRotationFlag(args->kv_rotation));
      ASSIGN_OR_RETURN(options.lm_head_dtype, ParseLmHeadDtypeFlag(args->lm_head_dtype));
      options.max_sequences = 1;
      options.max_model_len = context;
      options.max_batch_tokens =
          static_cast<int>(std::max<int64_t>(options.max_batch_tokens, context));
      RETURN_IF_ERROR(args->pipeline.Apply(&options));
      ASSIGN_OR_RETURN(auto engine, LoadEngine(args->model, options));
      ASSIGN_OR_RETURN(PerplexityResult r, ComputePerplexity(*engine, ids, context, stride));
      if (args->json) {
        std::cout << nlohmann::json{{"tokens", r.tokens}, {"nll", r.nll}, {"ppl", r.ppl}}.dump()
                  << "\n";
      } else {
        std::cout << absl::StrFormat(
            "%s: %d tokens scored (context %d, stride %d), nll %.6f, ppl %.4f\n", args->input,
            r.tokens, context, stride, r.nll, r.ppl);
      }
      return absl::OkStatus();
    });
  });
}

}  // namespace bitserve::cli
