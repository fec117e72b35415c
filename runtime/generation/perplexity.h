// Perplexity of a token sequence with a sliding window (Hugging Face's strided perplexity of
// fixed-length models, with exact token counts; tools/train/reference.py computes the same in
// PyTorch):
//   windows start at b = 0, S, 2S, ... and cover ids[b, min(b + C, N)); the last reaches N
//   a window scores positions p in [max(previous window's end, b + 1), end), each predicted
//   from ids[b, p) (its context lies inside the window)
//   nll = mean over scored positions of -log softmax(logits)[ids[p]];  ppl = exp(nll)
// With S < C every position but the first is scored once, with at least C - S tokens of context
// (after the first window). With S == C the first token of each later window is not scored.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace bitserve {

struct PerplexityWindow {
  int64_t begin = 0, end = 0;  // ids[begin, end) run as one sequence
  int64_t first_scored = 0;    // positions [first_scored, end) are scored
};

// InvalidArgument unless 1 <= stride <= context and n >= 2.
absl::StatusOr<std::vector<PerplexityWindow>> StridedWindows(int64_t n, int64_t context,
                                                             int64_t stride);

struct PerplexityResult {
  int64_t tokens = 0;  // scored positions
  double nll = 0;      // mean negative log-likelihood (nats per token)
  double ppl = 0;      // exp(nll)
};

// Runs every window through `engine` (one sequence at a time, from position 0, KV blocks
// 0, 1, ...; logits of all rows) and accumulates in double. `context` must fit the engine
// (max_model_len, max_batch_tokens, KV blocks); errors name the limit.
absl::StatusOr<PerplexityResult> ComputePerplexity(Engine& engine, std::span<const int32_t> ids,
                                                   int64_t context, int64_t stride);

}  // namespace bitserve
