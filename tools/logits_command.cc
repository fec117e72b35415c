// bitserve logits --model DIR --tokens 1,2,3 --out F.npy: float32 [T, vocab] of one prefill.
#include <algorithm>
#include <filesystem>
#include <iostream>

#include "base/status_macros.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/engine/engine.h"
#include "runtime/generation/generation.h"
#include "tools/command_line.h"

namespace bitserve::cli {

void AddLogitsCommand(CLI::App& app) {
  struct Args {
    std::string model, tokens, out, trace_dir, device = "cpu", kv_dtype, kv_rotation, lm_head_dtype;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the logits of every prompt token as .npy");
  cmd->add_option("--model", args->model, "Checkpoint directory")->required();
  cmd->add_option("--tokens", args->tokens, "Comma-separated token ids")->required();
  cmd->add_option("--out", args->out, "Output .npy file (float32 [tokens, vocab])")->required();
  cmd->add_option("--device", args->device, "cpu or cuda[:N]");
  AddKvDtypeOption(cmd, &args->kv_dtype);
  AddKvRotationOption(cmd, &args->kv_rotation);
  AddLmHeadDtypeOption(cmd, &args->lm_head_dtype);
  cmd->add_option(
      "--trace-dir", args->trace_dir,
      "Also write every activation before int8 quantization as DIR/L<layer>_<name>.npy");
  cmd->callback([args] {
    RunOrExit("logits", [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ParseTokenIds(args->tokens, "--tokens"));
      EngineOptions options;
      options.device = args->device;
      ASSIGN_OR_RETURN(options.kv_dtype, ParseKvDtypeFlag(args->kv_dtype));
      ASSIGN_OR_RETURN(options.kv_rotation, ParseKvRotationFlag(args->kv_rotation));
      ASSIGN_OR_RETURN(options.lm_head_dtype, ParseLmHeadDtypeFlag(args->lm_head_dtype));
      options.max_sequences = 1;
      absl::Status trace_status;
      if (!args->trace_dir.empty()) {
        std::filesystem::create_directories(args->trace_dir);
        options.trace = [&](const std::string& name, int layer, const float* x, int64_t rows,
                            int64_t dim) {
          auto path = std::filesystem::path(args->trace_dir) /
                      ("L" + std::to_string(layer) + "_" + name + ".npy");
          trace_status.Update(WriteNpyFloat32(path, {rows, dim}, x));
        };
      }
      options.max_batch_tokens = std::max<int>(options.max_batch_tokens, tokens.size());
      ASSIGN_OR_RETURN(auto engine, LoadEngine(args->model, options));
      std::vector<float> logits;
      const std::vector<int32_t> blocks = IdentityBlockTable(*engine);
      const BatchEntry entry{0, tokens, blocks, LogitsWanted::kAll};
      RETURN_IF_ERROR(engine->Forward({&entry, 1}, &logits));
      RETURN_IF_ERROR(trace_status);
      const int64_t vocab = engine->config().vocab_size;
      return WriteNpyFloat32(args->out, {static_cast<int64_t>(tokens.size()), vocab},
                             logits.data());
    });
  });
}

}  // namespace bitserve::cli
