// KV accounting per expert-parallel rank: the blocks split into one pool per rank, every sequence
// kept inside one pool, new sequences spread over the pools, capacity and preemption judged per
// pool, and whole workloads still giving each request its solo output.
#include <set>

#include "base/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/fake_engine.h"
#include "scheduler/fake_serving_loop.h"
#include "scheduler/kv_block_allocator.h"
#include "scheduler/scheduler.h"

namespace bitserve::scheduler {
namespace {

using ::testing::HasSubstr;

constexpr int kVocab = 1000;

int PoolOfTable(const std::vector<int32_t>& table, int pool_blocks) {
  std::set<int> pools;
  for (int32_t b : table) pools.insert(b / pool_blocks);
  EXPECT_EQ(pools.size(), 1u) << "a table spans pools";
  return *pools.begin();
}

TEST(KvPools, SequencesSpreadOverPoolsAndStayInTheirs) {
  KvBlockAllocator blocks(8, 4, 2);  // pool 0: blocks 0-3, pool 1: blocks 4-7
  EXPECT_EQ(blocks.num_pools(), 2);
  EXPECT_EQ(blocks.pool_blocks(), 4);
  EXPECT_EQ(blocks.pool_capacity_tokens(), 16);
  EXPECT_EQ(blocks.capacity_tokens(), 32);
  ASSERT_TRUE(blocks.TryGrow(1, 4));  // pool 0 (both empty: the lower index)
  ASSERT_TRUE(blocks.TryGrow(2, 4));  // pool 1 (fewer sequences)
  ASSERT_TRUE(blocks.TryGrow(3, 4));  // pool 0 again
  EXPECT_EQ(blocks.PoolOf(1), 0);
  EXPECT_EQ(blocks.PoolOf(2), 1);
  EXPECT_EQ(blocks.PoolOf(3), 0);
  EXPECT_EQ(blocks.PoolOf(99), -1);
  EXPECT_EQ(blocks.num_sequences(0), 2);
  EXPECT_EQ(blocks.num_free_blocks(0), 2);
  EXPECT_EQ(blocks.num_free_blocks(1), 3);
  // Growing stays in the sequence's pool; pool 0 has 2 blocks left, pool 1 has 3.
  ASSERT_TRUE(blocks.TryGrow(1, 12));
  EXPECT_FALSE(blocks.TryGrow(3, 8)) << "pool 0 is full, whatever pool 1 has free";
  EXPECT_EQ(blocks.num_free_blocks(), 3);
  for (uint64_t seq : {1, 2, 3}) {
    EXPECT_EQ(PoolOfTable(blocks.block_table(seq), 4), blocks.PoolOf(seq));
  }
  // A new sequence of 2 blocks can only go to pool 1; one of 4 blocks nowhere.
  EXPECT_EQ(blocks.PoolFor(2), 1);
  EXPECT_EQ(blocks.PoolFor(4), -1);
  // Freed blocks go back to their own pool.
  blocks.Free(1);
  EXPECT_EQ(blocks.num_free_blocks(0), 3);
  EXPECT_EQ(blocks.num_sequences(0), 1);
  EXPECT_EQ(blocks.num_free_blocks(), 6);
}

SchedulerConfig PoolConfig() {
  SchedulerConfig c;
  c.max_num_batched_tokens = 64;
  c.max_num_seqs = 8;
  c.block_size = 4;
  c.num_kv_blocks = 16;  // two pools of 8 blocks = 32 tokens each
  c.num_kv_pools = 2;
  c.max_model_len = 256;
  c.max_waiting = 16;
  c.long_prefill_chunk = 64;
  return c;
}

std::unique_ptr<Scheduler> Make(const SchedulerConfig& config) {
  auto scheduler = Scheduler::Create(config);
  BITSERVE_CHECK(scheduler.ok()) << scheduler.status();
  return *std::move(scheduler);
}

Request Req(uint64_t id, int prompt_length, int max_new_tokens) {
  Request r{id, {}, max_new_tokens, 0};
  for (int i = 0; i < prompt_length; ++i)
    r.prompt_tokens.push_back(static_cast<int32_t>(id * 100 + i));
  return r;
}

TEST(KvPools, ConfigMustSplitEvenly) {
  SchedulerConfig c = PoolConfig();
  c.num_kv_blocks = 15;
  absl::Status s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("num_kv_pools"));
  c.num_kv_blocks = 16;
  c.num_kv_pools = 0;
  EXPECT_FALSE(c.Validate().ok());
}

TEST(KvPools, CapacityIsOnePoolsAndAdmissionAlternates) {
  auto s = Make(PoolConfig());
  // 40 tokens fit the 64 of the whole cache but not the 32 of one rank.
  absl::Status big = s->Add(Req(9, 30, 11));
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.message(), HasSubstr("expert-parallel rank"));
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(s->Add(Req(id, 5, 3)).ok());
  StepPlan plan = s->Schedule();
  ASSERT_EQ(plan.entries.size(), 4u);
  std::vector<int> pools;
  for (const PlanEntry& e : plan.entries) pools.push_back(PoolOfTable(e.block_table, 8));
  EXPECT_THAT(pools, ::testing::ElementsAre(0, 1, 0, 1));
}

TEST(KvPools, PreemptionTakesAVictimFromTheSamePool) {
  auto s = Make(PoolConfig());
  // Admitted in one step: 1 -> pool 0 (all equal: the lowest index), 2 -> pool 1 (fewer
  // sequences), 3 -> pool 0 (a tie on sequences and free blocks), 4 -> pool 1. Pool 1's sequences
  // fit its 8 blocks (5 + 3); pool 0's two long ones need 16.
  const std::vector<Request> requests = {Req(1, 12, 20), Req(2, 12, 8), Req(3, 12, 20),
                                         Req(4, 4, 8)};
  for (const Request& r : requests) ASSERT_TRUE(s->Add(r).ok());
  FakeServingLoop loop(*s, kVocab, /*steps_in_flight=*/1);
  ASSERT_TRUE(loop.Tick());
  for (uint64_t id = 1; id <= 4; ++id) {
    EXPECT_EQ(s->kv_blocks().PoolOf(id), id % 2 == 1 ? 0 : 1) << "sequence " << id;
  }
  // When sequence 1 outgrows pool 0, the victim is 3, the newest of pool 0, and not 4, the
  // newest running sequence, whose blocks would not help.
  for (int i = 0; i < 40 && loop.preempted().empty(); ++i) ASSERT_TRUE(loop.Tick());
  EXPECT_THAT(loop.preempted(), ::testing::ElementsAre(3u));
  EXPECT_NE(s->FindSequence(4), nullptr) << "4 was still running when 3 was preempted";
  loop.RunToCompletion();
  for (const Request& r : requests) {
    EXPECT_EQ(loop.streamed().at(r.id),
              FakeEngine::SoloOutput(r.prompt_tokens, r.max_new_tokens, kVocab))
        << "request " << r.id;
  }
}

}  // namespace
}  // namespace bitserve::scheduler
