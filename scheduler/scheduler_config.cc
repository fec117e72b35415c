#include "scheduler/scheduler_config.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve::scheduler {
namespace {

absl::Status AtLeastOne(const char* field, int value) {
  if (value >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("SchedulerConfig.", field, " must be >= 1, got ", value));
}

}  // namespace

absl::Status SchedulerConfig::Validate() const {
  RETURN_IF_ERROR(AtLeastOne("max_num_batched_tokens", max_num_batched_tokens));
  RETURN_IF_ERROR(AtLeastOne("max_num_seqs", max_num_seqs));
  RETURN_IF_ERROR(AtLeastOne("block_size", block_size));
  RETURN_IF_ERROR(AtLeastOne("num_kv_blocks", num_kv_blocks));
  RETURN_IF_ERROR(AtLeastOne("num_kv_pools", num_kv_pools));
  if (num_kv_blocks % num_kv_pools != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SchedulerConfig.num_kv_blocks (", num_kv_blocks, ") must split evenly into ",
                     num_kv_pools, " pools (num_kv_pools: one per expert-parallel rank)"));
  }
  RETURN_IF_ERROR(AtLeastOne("max_model_len", max_model_len));
  RETURN_IF_ERROR(AtLeastOne("max_waiting", max_waiting));
  RETURN_IF_ERROR(AtLeastOne("long_prefill_chunk", long_prefill_chunk));
  if (max_num_batched_tokens < max_num_seqs) {
    return absl::InvalidArgumentError(
        absl::StrCat("SchedulerConfig.max_num_batched_tokens (", max_num_batched_tokens,
                     ") must be >= max_num_seqs (", max_num_seqs,
                     "): every running sequence needs room for its decode token in each step"));
  }
  return absl::OkStatus();
}

}  // namespace bitserve::scheduler
