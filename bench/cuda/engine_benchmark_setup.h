// What the engine benchmarks (engine_benchmark, long_context_benchmark) share: comma-separated
// number flags, medians, and a model preset written with random weights to a temporary folder.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"

namespace bitserve {

// "1,16,64" -> {1, 16, 64}; parts that are not numbers are skipped.
inline std::vector<int64_t> ParseNumberList(const std::string& s) {
  std::vector<int64_t> v;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    int64_t x = 0;
    if (absl::SimpleAtoi(part, &x)) v.push_back(x);
  }
  return v;
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// `preset` (random weights, the real shapes, no tokenizer) in temp_directory_path()/folder.
inline absl::StatusOr<std::filesystem::path> WriteBenchmarkModel(const std::string& preset,
                                                                 const std::string& folder) {
  ASSIGN_OR_RETURN(ModelPreset p, FindModelPreset(preset));
  p.with_tokenizer = false;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / folder;
  RETURN_IF_ERROR(WriteSyntheticCheckpoint(p, dir, SyntheticCheckpointOptions{}));
  return dir;
}

}  // namespace bitserve
