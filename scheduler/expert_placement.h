// Expert parallelism (DESIGN.md "Parallelism"): which rank of an EP group holds each routed expert.
// Every rank holds the dense weights; the routed experts are split between the ranks, and a token
// routed to an expert is sent to the rank that owns it (runtime/transport/expert_exchange.h).
//
// Contiguous (the default): rank r owns experts [r * N / E, (r + 1) * N / E) of N experts over
// E ranks, E dividing N, so that every rank holds the same number of experts (the same memory).
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

}  // namespace bitserve::scheduler
