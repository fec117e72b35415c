#include "scheduler/expert_placement.h"

#include <algorithm>
#include <numeric>

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

absl::StatusOr<ExpertPlacement> BalancedPlacement(const std::vector<int64_t>& loads,
                                                  int group_size) {
  const int n = static_cast<int>(loads.size());
  // The same checks (and sizes) as the contiguous placement.
  absl::StatusOr<ExpertPlacement> placement = ContiguousPlacement(n, group_size);
  if (!placement.ok()) return placement.status();
  for (int e = 0; e < n; ++e) {
    if (loads[e] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", e, " has a load of ", loads[e]));
    }
  }
  if (n == 0) return placement;
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return loads[a] > loads[b]; });
  const int per_rank = n / group_size;
  std::vector<int64_t> rank_load(group_size, 0);
  std::vector<int> held(group_size, 0);
  for (int32_t e : order) {
    int best = -1;
    for (int r = 0; r < group_size; ++r) {
      if (held[r] < per_rank && (best < 0 || rank_load[r] < rank_load[best])) best = r;
    }
    placement->owner[e] = best;
    rank_load[best] += loads[e];
    ++held[best];
  }
  return placement;
}

std::vector<int64_t> RankLoads(const ExpertPlacement& placement,
                               const std::vector<int64_t>& loads) {
  std::vector<int64_t> out(placement.group_size, 0);
  for (int e = 0; e < placement.num_experts() && e < static_cast<int>(loads.size()); ++e) {
    out[placement.owner[e]] += loads[e];
  }
  return out;
}

}  // namespace bitserve::scheduler
