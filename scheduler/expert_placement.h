// Expert parallelism (DESIGN.md "Parallelism"): which rank of an EP group holds each routed expert.
// Every rank holds the dense weights; the routed experts are split between the ranks, and a token
// routed to an expert is sent to the rank that owns it (runtime/transport/expert_exchange.h).
//
// Contiguous (the default): rank r owns experts [r * N / E, (r + 1) * N / E) of N experts over
// E ranks, E dividing N, so that every rank holds the same number of experts (the same memory).
// Balanced: the same N / E experts per rank, chosen from observed loads (tokens per expert, e.g.
// bitserve_expert_tokens_total summed over layers) so that the busiest rank does as little as
// possible: the heaviest experts first, each to the least loaded rank that has room (greedy
// longest-processing-time). The engines and workers take any owner map; serve uses contiguous.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace bitserve::scheduler {

struct ExpertPlacement {
  int group_size = 1;
  std::vector<int32_t> owner;  // [num_experts]: the rank holding each expert

  int num_experts() const { return static_cast<int>(owner.size()); }
  // The experts `rank` holds, ascending.
  std::vector<int32_t> ExpertsOf(int rank) const;
};

// InvalidArgument naming what is wrong: group_size < 1, a group of more than one rank for a dense
// model (num_experts == 0: nothing to split), or a group size that does not divide num_experts.
absl::StatusOr<ExpertPlacement> ContiguousPlacement(int num_experts, int group_size);
// `loads` [num_experts], each >= 0; the errors of ContiguousPlacement, and InvalidArgument for a
// negative load.
absl::StatusOr<ExpertPlacement> BalancedPlacement(const std::vector<int64_t>& loads,
                                                  int group_size);
// Tokens each rank's experts ran under `placement`, for `loads` [num_experts].
std::vector<int64_t> RankLoads(const ExpertPlacement& placement, const std::vector<int64_t>& loads);

}  // namespace bitserve::scheduler
