#include "scheduler/scheduler_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/scheduler.h"

namespace bitserve::scheduler {
namespace {

using ::testing::HasSubstr;

SchedulerConfig Valid() {
  SchedulerConfig c;
  c.num_kv_blocks = 100;
  return c;
}

TEST(SchedulerConfig, DefaultsWithKvBlocksAreValid) {
  EXPECT_TRUE(Valid().Validate().ok()) << Valid().Validate();
  EXPECT_EQ(Valid().kv_capacity_tokens(), 1600);
}

TEST(SchedulerConfig, KvBlocksHaveNoDefault) {
  absl::Status s = SchedulerConfig().Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("num_kv_blocks must be >= 1, got 0"));
}

TEST(SchedulerConfig, EachFieldIsNamed) {
  struct Case {
    const char* field;
    int SchedulerConfig::*member;
  };
  for (const Case& c : {Case{"max_num_batched_tokens", &SchedulerConfig::max_num_batched_tokens},
                        Case{"max_num_seqs", &SchedulerConfig::max_num_seqs},
                        Case{"block_size", &SchedulerConfig::block_size},
                        Case{"num_kv_blocks", &SchedulerConfig::num_kv_blocks},
                        Case{"max_model_len", &SchedulerConfig::max_model_len},
                        Case{"max_waiting", &SchedulerConfig::max_waiting},
                        Case{"long_prefill_chunk", &SchedulerConfig::long_prefill_chunk}}) {
    SchedulerConfig config = Valid();
    config.*c.member = -3;
    absl::Status s = config.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(s.message(),
                HasSubstr(std::string("SchedulerConfig.") + c.field + " must be >= 1, got -3"));
  }
}

TEST(SchedulerConfig, BudgetMustCoverOneDecodePerSequence) {
  SchedulerConfig config = Valid();
  config.max_num_batched_tokens = 64;
  config.max_num_seqs = 128;
  absl::Status s = config.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("max_num_batched_tokens (64) must be >= max_num_seqs (128)"));
}

TEST(SchedulerConfig, CreateValidates) {
  auto scheduler = Scheduler::Create(SchedulerConfig());
  EXPECT_EQ(scheduler.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(scheduler.status().message(), HasSubstr("num_kv_blocks"));
  EXPECT_TRUE(Scheduler::Create(Valid()).ok());
}

}  // namespace
}  // namespace bitserve::scheduler
