#include "scheduler/expert_placement.h"

#include "absl/strings/str_cat.h"

namespace bitserve::scheduler {

std::vector<int32_t> ExpertPlacement::ExpertsOf(int rank) const {
  std::vector<int32_t> experts;
  for (int e = 0; e < num_experts(); ++e) {
    if (owner[e] == rank) experts.push_back(e);
  }
  return experts;
}

absl::StatusOr<ExpertPlacement> ContiguousPlacement(int num_experts, int group_size) {
  if (group_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("an expert-parallel group needs at least 1 rank, got ", group_size));
  }
  if (num_experts < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_experts is ", num_experts));
  }
  if (num_experts == 0 && group_size > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert parallelism over ", group_size,
                     " ranks needs a mixture-of-experts model; this one is dense (no experts)"));
  }
  if (num_experts % group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert parallelism over ", group_size, " ranks does not divide the model's ", num_experts,
        " experts (each rank holds as many; choose a divisor of ", num_experts, ")"));
  }
  ExpertPlacement placement;
  placement.group_size = group_size;
  placement.owner.resize(num_experts);
  const int per_rank = group_size > 0 ? num_experts / group_size : 0;
  for (int e = 0; e < num_experts; ++e) placement.owner[e] = e / per_rank;
  return placement;
}

}  // namespace bitserve::scheduler
