#include "runtime/generation/perplexity.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {

absl::StatusOr<std::vector<PerplexityWindow>> StridedWindows(int64_t n, int64_t context,
                                                             int64_t stride) {
  if (context < 1)
    return absl::InvalidArgumentError(absl::StrCat("context must be >= 1, got ", context));
  if (stride < 1 || stride > context) {
    return absl::InvalidArgumentError(
        absl::StrCat("stride must be in [1, context = ", context, "], got ", stride));
  }
  if (n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity needs at least 2 tokens (BOS and one more), got ", n));
  }
  std::vector<PerplexityWindow> windows;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + context, n);
    windows.push_back({begin, end, std::max(prev_end, begin + 1)});
    prev_end = end;
    if (end == n) return windows;
  }
}

absl::StatusOr<PerplexityResult> ComputePerplexity(Engine& engine, std::span<const int32_t> ids,
                                                   int64_t context, int64_t stride) {
  if (context > engine.max_model_len()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context ", context, " exceeds the engine's max_model_len ", engine.max_model_len()));
  }
  if (context > engine.max_batch_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context ", context, " exceeds the engine's max_batch_tokens ", engine.max_batch_tokens()));
  }
  const int64_t blocks = (context + engine.block_size() - 1) / engine.block_size();
  if (blocks > engine.num_kv_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("context ", context, " needs ", blocks,
                                                   " KV blocks; the engine has ",
                                                   engine.num_kv_blocks()));
  }
  ASSIGN_OR_RETURN(std::vector<PerplexityWindow> windows,
                   StridedWindows(ids.size(), context, stride));
  std::vector<int32_t> block_table(blocks);
  std::iota(block_table.begin(), block_table.end(), 0);
  const int64_t vocab = engine.config().vocab_size;

  double nll = 0;
  int64_t count = 0;
  std::vector<float> logits;
  for (const PerplexityWindow& w : windows) {
    const BatchEntry entry{0, ids.subspan(w.begin, w.end - w.begin), block_table,
                           LogitsWanted::kAll};
    RETURN_IF_ERROR(engine.Forward({&entry, 1}, &logits));
    for (int64_t p = w.first_scored; p < w.end; ++p) {
      const float* row = logits.data() + (p - 1 - w.begin) * vocab;
      const float mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      nll += (mx + std::log(sum)) - static_cast<double>(row[ids[p]]);
      ++count;
    }
  }
  PerplexityResult result;
  result.tokens = count;
  result.nll = nll / count;
  result.ppl = std::exp(result.nll);
  return result;
}

}  // namespace bitserve
