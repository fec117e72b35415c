// What the accuracy tests of lossy formats (kv_dtype_test: the KV cache; lm_head_dtype_test: the
// LM head) share: the trained fixtures' CI excerpt as token ids, and logit-row comparisons.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "base/file_io.h"
#include "gtest/gtest.h"
#include "runtime/generation/generation.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {

// BOS and the CI excerpt of the held-out text, tokenized by the model's tokenizer (empty on a
// failure, which is reported).
inline std::vector<int32_t> ExcerptIds(const std::filesystem::path& dir, int32_t bos) {
  auto tokenizer = Tokenizer::Load(dir);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto text = ReadFileToString("models/data/shakespeare-valid-excerpt.txt");
  EXPECT_TRUE(text.ok()) << text.status();
  if (!tokenizer.ok() || !text.ok()) return {};
  std::vector<int32_t> ids = {bos};
  const std::vector<int32_t> body = (*tokenizer)->Encode(*text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

// ||a - ref|| / ||ref||.
inline double RelativeL2(std::span<const float> a, std::span<const float> ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double{a[i]} - ref[i]) * (double{a[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / den);
}

// How far (in standard deviations of the row) the row's best logit is above its logit of `token`.
inline double GapInRowSd(std::span<const float> row, int32_t token) {
  double mean = 0, var = 0;
  for (float x : row) mean += x;
  mean /= row.size();
  for (float x : row) var += (x - mean) * (x - mean);
  return (double{row[ArgMax(row)]} - row[token]) / std::sqrt(var / row.size());
}

}  // namespace bitserve
