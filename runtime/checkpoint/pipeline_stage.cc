#include "runtime/checkpoint/pipeline_stage.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace bitserve {

absl::Status PipelineStage::Validate(int num_layers) const {
  if (num_stages < 1 || stage < 0 || stage >= num_stages) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline stage ", stage, " of ", num_stages,
                                                   ": need 0 <= stage < num_stages"));
  }
  const int e = end(num_layers);
  if (layer_begin < 0 || e > num_layers || layer_begin >= e) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline stage ", stage, ": layers [", layer_begin, ", ", e,
                     ") are not a non-empty range of the ", num_layers, " layers"));
  }
  if (first() && layer_begin != 0) {
    return absl::InvalidArgumentError("pipeline stage 0 must start at layer 0");
  }
  if (last() && e != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("the last pipeline stage must end at layer ", num_layers, ", not ", e));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PipelineStage>> BalanceStages(const ModelConfig& c, int num_stages) {
  const int n = c.num_hidden_layers;
  if (num_stages < 1 || num_stages > n) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline stages must be in [1, ", n,
                                                   "] (the model has ", n, " layers), got ",
                                                   num_stages));
  }
  // Bytes read per decode step: a layer's ternary weights at 2 bits, the LM head in bf16.
  const double h = c.hidden_size;
  const double ffn = c.is_moe()
                         ? static_cast<double>(c.num_experts_per_tok) * c.moe_intermediate_size
                         : static_cast<double>(c.intermediate_size);
  const double layer = (h * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * h + 3.0 * h * ffn) / 4.0;
  const double head = 2.0 * h * c.vocab_size;
  // Stage s ends after the layer where the running cost passes (s + 1) / S of the total, keeping
  // at least one layer per stage.
  const double total = n * layer + head;
  std::vector<PipelineStage> stages(num_stages);
  int begin = 0;
  for (int s = 0; s < num_stages; ++s) {
    PipelineStage& st = stages[s];
    st.stage = s;
    st.num_stages = num_stages;
    st.layer_begin = begin;
    if (s == num_stages - 1) {
      st.layer_end = n;
    } else {
      const double target = total * (s + 1) / num_stages;
      int end = begin + 1;
      // Take the next layer while that brings the cost closer to the target.
      while (end < n - (num_stages - 1 - s) &&
             std::abs((end + 1) * layer - target) <= std::abs(end * layer - target)) {
        ++end;
      }
      st.layer_end = end;
    }
    begin = st.layer_end;
  }
  return stages;
}

absl::StatusOr<std::vector<PipelineStage>> StagesFromSplit(const ModelConfig& c, int num_stages,
                                                           const std::vector<int>& layers) {
  const int n = c.num_hidden_layers;
  int64_t sum = 0;
  bool positive = true;
  for (int l : layers) {
    sum += l;
    positive = positive && l >= 1;
  }
  if (static_cast<int>(layers.size()) != num_stages || !positive || sum != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pipeline split ", absl::StrJoin(layers, ","), ": need ", num_stages,
        " layer counts (one per stage), each >= 1, summing to the model's ", n, " layers"));
  }
  std::vector<PipelineStage> stages(num_stages);
  int begin = 0;
  for (int s = 0; s < num_stages; ++s) {
    stages[s] = {s, num_stages, begin, begin + layers[s]};
    begin += layers[s];
  }
  return stages;
}

absl::StatusOr<std::vector<int>> ParsePipelineSplit(absl::string_view text) {
  std::vector<int> layers;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pipeline split \"", text, "\" is not a comma-separated list of layer counts"));
    }
    layers.push_back(v);
  }
  return layers;
}

}  // namespace bitserve
