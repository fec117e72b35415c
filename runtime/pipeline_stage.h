// Pipeline parallelism (DESIGN.md "Parallelism"): which layers a stage holds, how the layers are
// balanced over stages, and how hidden states cross from one stage to the next.
//
// Transfer formats of the hidden states of a step ([tokens, hidden], the residual stream after
// the stage's last layer), one message per step:
//
//   int8 (default): [tokens] float32 scales, then [tokens, hidden] int8, row-major.
//                   scale = max|x| / 127 of the token's row; q = clamp(rint(x * (127 / max|x|)),
//                   -127, 127) (round half to even); the receiver uses q * scale. An all-zero
//                   row has scale 0.
//   bf16:           [tokens, hidden] bf16 bits (round to nearest even).
//
// int8 moves about half of bf16's bytes; what it costs in logits and perplexity is measured in
// docs/quality.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/model_config.h"

namespace bitserve {

struct PipelineStage {
  int stage = 0;
  int num_stages = 1;
  int layer_begin = 0;
  int layer_end = -1;  // exclusive; -1: every layer (the whole model)

  bool first() const { return stage == 0; }
  bool last() const { return stage == num_stages - 1; }
  bool whole_model() const { return num_stages == 1; }
  // InvalidArgument naming the field when the stage does not fit a model of `num_layers`.
  absl::Status Validate(int num_layers) const;
  // layer_end with -1 resolved.
  int end(int num_layers) const { return layer_end < 0 ? num_layers : layer_end; }
};

// Splits the layers into `num_stages` contiguous, non-empty ranges balanced by the bytes a decode
// step reads on each stage (2-bit ternary weights per layer; the bf16 LM head on the last stage,
// the embedding row gathers cost nothing): decode is bandwidth-bound. InvalidArgument when there
// are fewer layers than stages.
absl::StatusOr<std::vector<PipelineStage>> BalanceStages(const ModelConfig& config, int num_stages);

enum class TransferDtype { kInt8, kBf16 };
absl::StatusOr<TransferDtype> ParseTransferDtype(absl::string_view name);  // "int8" | "bf16"
std::string TransferDtypeName(TransferDtype dtype);

// Bytes of one message of `tokens` rows of `hidden` values.
int64_t TransferBytes(TransferDtype dtype, int64_t tokens, int64_t hidden);
// x: [tokens, hidden] float32 -> out: TransferBytes(...) bytes.
void EncodeHidden(TransferDtype dtype, const float* x, int64_t tokens, int64_t hidden, uint8_t* out);
// in: TransferBytes(...) bytes -> x: [tokens, hidden] float32.
void DecodeHidden(TransferDtype dtype, const uint8_t* in, int64_t tokens, int64_t hidden, float* x);

}  // namespace bitserve
