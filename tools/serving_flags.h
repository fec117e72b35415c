// The flags that size a coordinator and its engine, as `serve`, `batch --model` and `bench-serve
// --model` take them, and the one place where they become rpc::CoordinatorOptions, so that the
// three serve a model the same way (a `bench-serve --model` run measures what `serve` runs).
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "rpc/coordinator.h"

namespace bitserve::cli {

struct ServingFlags {
  std::string device = "cpu";
  std::string kv_dtype;       // empty: the device's default
  std::string kv_rotation;    // empty: the dtype's default (DefaultKvRotation)
  std::string load_format;    // empty: safetensors
  std::string lm_head_dtype;  // empty: bf16
  int max_num_seqs = 256;
  int max_waiting = 1024;
  int max_batch_tokens = 8192;
  int max_model_len = 0;  // 0: the scheduler's default, capped by the model's
  int num_kv_blocks = 0;  // 0: sized for the device
  int block_size = 16;
  bool no_prefix_caching = false;
};

// Adds --device, --kv-dtype, --kv-rotation, --load-format, --lm-head-dtype, --max-num-seqs,
// --max-waiting, --max-batch-tokens, --max-model-len, --num-kv-blocks, --block-size and
// --no-prefix-caching. `in_process_note`: prefixed to each help text, e.g. "With --model: " for
// commands that may also drive a remote server instead.
void AddServingFlags(CLI::App* cmd, ServingFlags* flags, const std::string& in_process_note = "");

// The coordinator's options for `model_dir` (metrics off, request logs on: callers change those).
// InvalidArgument naming the flag for a value no coordinator can take.
absl::StatusOr<rpc::CoordinatorOptions> ToCoordinatorOptions(const ServingFlags& flags,
                                                             const std::string& model_dir);

}  // namespace bitserve::cli
