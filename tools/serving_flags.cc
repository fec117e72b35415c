#include "tools/serving_flags.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "tools/command_line.h"

namespace bitserve::cli {

void AddServingFlags(CLI::App* cmd, ServingFlags* flags, const std::string& in_process_note) {
  const std::string& n = in_process_note;
  cmd->add_option("--device", flags->device, n + "cpu or cuda[:N]");
  AddKvDtypeOption(cmd, &flags->kv_dtype);
  AddKvRotationOption(cmd, &flags->kv_rotation);
  AddLoadFormatOption(cmd, &flags->load_format);
  AddLmHeadDtypeOption(cmd, &flags->lm_head_dtype);
  cmd->add_option("--max-num-seqs", flags->max_num_seqs, n + "Sequences running at once");
  cmd->add_option("--max-waiting", flags->max_waiting,
                  n + "Queued requests before RESOURCE_EXHAUSTED");
  cmd->add_option("--max-batch-tokens", flags->max_batch_tokens, n + "Tokens per engine step");
  cmd->add_option("--max-model-len", flags->max_model_len,
                  n + "Positions per sequence (0: the model's)");
  cmd->add_option("--num-kv-blocks", flags->num_kv_blocks,
                  n + "KV cache blocks (0: sized automatically)");
  cmd->add_option("--block-size", flags->block_size, n + "Tokens per KV block");
  cmd->add_flag("--no-prefix-caching", flags->no_prefix_caching,
                n + "Compute every prompt in full (default: full KV blocks of earlier requests "
                    "with the same leading tokens are reused)");
}

absl::StatusOr<rpc::CoordinatorOptions> ToCoordinatorOptions(const ServingFlags& flags,
                                                             const std::string& model_dir) {
  for (const auto& [name, value] : {std::pair{"--max-num-seqs", flags.max_num_seqs},
                                    {"--max-waiting", flags.max_waiting},
                                    {"--max-batch-tokens", flags.max_batch_tokens},
                                    {"--block-size", flags.block_size}}) {
    if (value < 1)
      return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1, got ", value));
  }
  for (const auto& [name, value] : {std::pair{"--max-model-len", flags.max_model_len},
                                    {"--num-kv-blocks", flags.num_kv_blocks}}) {
    if (value < 0)
      return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 0, got ", value));
  }
  rpc::CoordinatorOptions options;
  options.model_dir = model_dir;
  options.engine.device = flags.device;
  ASSIGN_OR_RETURN(options.engine.kv_dtype, ParseKvDtypeFlag(flags.kv_dtype));
  if (options.engine.kv_dtype) {
    // Before any worker starts: a pipeline of CUDA workers would each refuse it later.
    if (absl::Status s = CheckKvDtype(flags.device, *options.engine.kv_dtype); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--kv-dtype: ", s.message()));
    }
  }
  ASSIGN_OR_RETURN(options.engine.kv_rotation, ParseKvRotationFlag(flags.kv_rotation));
  ASSIGN_OR_RETURN(options.engine.load_format, ParseLoadFormatFlag(flags.load_format));
  ASSIGN_OR_RETURN(options.engine.lm_head_dtype, ParseLmHeadDtypeFlag(flags.lm_head_dtype));
  options.engine.block_size = flags.block_size;
  options.engine.num_kv_blocks = flags.num_kv_blocks;
  options.engine.max_sequences = flags.max_num_seqs;
  options.engine.max_batch_tokens = flags.max_batch_tokens;
  options.scheduler.max_num_seqs = flags.max_num_seqs;
  options.scheduler.max_waiting = flags.max_waiting;
  options.scheduler.enable_prefix_caching = !flags.no_prefix_caching;
  options.scheduler.max_num_batched_tokens = flags.max_batch_tokens;
  options.scheduler.long_prefill_chunk =
      std::min(options.scheduler.long_prefill_chunk, flags.max_batch_tokens);
  if (flags.max_model_len > 0) {
    options.engine.max_model_len = flags.max_model_len;
    options.scheduler.max_model_len = flags.max_model_len;
  }
  return options;
}

}  // namespace bitserve::cli
