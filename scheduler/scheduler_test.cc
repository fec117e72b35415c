// The scheduler step by step: admission errors, plans, chunking, ordering, preemption, release.
// scheduler_workload_test.cc runs whole workloads.
#include "scheduler/scheduler.h"

#include <algorithm>
#include <numeric>

#include "base/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/fake_engine.h"
#include "scheduler/fake_serving_loop.h"

namespace bitserve::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int kVocab = 1000;

SchedulerConfig SmallConfig() {
  SchedulerConfig c;
  c.max_num_batched_tokens = 64;
  c.max_num_seqs = 8;
  c.block_size = 4;
  c.num_kv_blocks = 64;
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

std::vector<int32_t> Prompt(int length, int32_t first = 1) {
  std::vector<int32_t> p(length);
  std::iota(p.begin(), p.end(), first);
  return p;
}

Request Req(uint64_t id, int prompt_length, int max_new_tokens, int priority = 0) {
  return Request{id, Prompt(prompt_length, static_cast<int32_t>(id * 100)), max_new_tokens,
                 priority};
}

std::vector<int32_t> Solo(const Request& r) {
  return FakeEngine::SoloOutput(r.prompt_tokens, r.max_new_tokens, kVocab);
}

std::vector<uint64_t> FinishOrder(const FakeServingLoop& loop) {
  std::vector<uint64_t> ids;
  for (const FinishedSequence& f : loop.finished()) ids.push_back(f.id);
  return ids;
}

TEST(SchedulerAdd, InvalidArgumentsNameTheField) {
  auto s = Make(SmallConfig());
  absl::Status st = s->Add(Request{1, {}, 4});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("request 1: prompt_tokens is empty"));

  st = s->Add(Request{2, {5, 6}, 0});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("request 2: max_new_tokens must be >= 1, got 0"));

  st = s->Add(Request{3, {5, -1, 7}, 4});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("prompt_tokens[1] is -1"));

  ASSERT_TRUE(s->Add(Req(4, 3, 2)).ok());
  st = s->Add(Req(4, 5, 5));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("request 4: duplicate id"));
  EXPECT_EQ(s->num_waiting(), 1);
}

TEST(SchedulerAdd, RefusesWhatCanNeverFitWithTheNumbers) {
  SchedulerConfig config = SmallConfig();
  config.max_model_len = 4096;
  config.num_kv_blocks = 100;  // 400 tokens
  auto s = Make(config);
  absl::Status st = s->Add(Req(1, 4000, 200));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("request 1: prompt of 4000 tokens + max_new_tokens 200 = "
                                      "4200 tokens exceeds max_model_len 4096"));

  st = s->Add(Req(2, 390, 12));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("request 2: prompt of 390 tokens + max_new_tokens 12 needs "
                                      "401 tokens of KV cache, more than its whole capacity of "
                                      "400 tokens (100 blocks of 4)"));
  // Exactly at the limits: the last sampled token needs no KV slot.
  EXPECT_TRUE(s->Add(Req(3, 390, 11)).ok());
  EXPECT_EQ(s->num_waiting(), 1);
}

TEST(SchedulerAdd, AtMaxModelLenIsAcceptedAndFinishesByLength) {
  SchedulerConfig config = SmallConfig();
  config.max_model_len = 20;
  auto s = Make(config);
  Request r = Req(1, 15, 5);
  ASSERT_TRUE(s->Add(r).ok());
  EXPECT_EQ(s->Add(Req(2, 15, 6)).code(), absl::StatusCode::kResourceExhausted);
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion();
  ASSERT_EQ(loop.finished().size(), 1u);
  EXPECT_EQ(loop.finished()[0].output_tokens, Solo(r));
  EXPECT_EQ(loop.finished()[0].num_prompt_tokens, 15);
}

TEST(SchedulerAdd, QueueFullNamesTheNumbers) {
  SchedulerConfig config = SmallConfig();
  config.max_waiting = 3;
  auto s = Make(config);
  for (uint64_t id = 0; id < 3; ++id) ASSERT_TRUE(s->Add(Req(id, 4, 2)).ok());
  absl::Status st = s->Add(Req(3, 4, 2));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(st.message(), "queue full: 3 waiting, limit 3");
  // Admitted sequences leave the queue.
  EXPECT_FALSE(s->Schedule().empty());
  EXPECT_EQ(s->num_waiting(), 0);
  EXPECT_TRUE(s->Add(Req(3, 4, 2)).ok());
}

TEST(Scheduler, PrefillThenDecodeWithBlockTables) {
  auto s = Make(SmallConfig());
  Request r = Req(7, 6, 3);
  ASSERT_TRUE(s->Add(r).ok());

  StepPlan plan = s->Schedule();
  ASSERT_EQ(plan.entries.size(), 1u);
  EXPECT_EQ(plan.num_decode_entries, 0);
  EXPECT_EQ(plan.num_tokens, 6);
  const PlanEntry& prefill = plan.entries[0];
  EXPECT_EQ(prefill.seq_id, 7u);
  EXPECT_EQ(prefill.start_position, 0);
  EXPECT_EQ(prefill.token_ids, r.prompt_tokens);
  EXPECT_TRUE(prefill.samples);
  EXPECT_THAT(prefill.block_table, ElementsAre(0, 1));  // 6 tokens, 4 a block
  EXPECT_EQ(s->num_running(), 1);
  EXPECT_EQ(s->num_kv_blocks_used(), 2);
  EXPECT_EQ(s->num_tokens_last_step(), 6);
  // In flight: nothing more to do until it returns.
  EXPECT_TRUE(s->Schedule().empty());

  auto done = s->Update({{7, 42}});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_THAT(*done, IsEmpty());

  plan = s->Schedule();
  ASSERT_EQ(plan.entries.size(), 1u);
  EXPECT_EQ(plan.num_decode_entries, 1);
  EXPECT_EQ(plan.entries[0].start_position, 6);
  EXPECT_THAT(plan.entries[0].token_ids, ElementsAre(42));
  EXPECT_TRUE(plan.entries[0].samples);
  EXPECT_THAT(plan.entries[0].block_table, ElementsAre(0, 1));
  ASSERT_TRUE(s->Update({{7, 43}}).ok());

  plan = s->Schedule();
  EXPECT_EQ(plan.entries[0].start_position, 7);
  EXPECT_THAT(plan.entries[0].token_ids, ElementsAre(43));
  done = s->Update({{7, 44}});
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->size(), 1u);
  EXPECT_EQ((*done)[0].id, 7u);
  EXPECT_THAT((*done)[0].output_tokens, ElementsAre(42, 43, 44));
  EXPECT_FALSE(s->has_unfinished());
  EXPECT_EQ(s->num_kv_blocks_used(), 0);
  EXPECT_EQ(s->FindSequence(7), nullptr);
}

TEST(Scheduler, ChunkedPrefillOfPromptLongerThanTheBudget) {
  SchedulerConfig config = SmallConfig();
  config.max_num_batched_tokens = 16;
  auto s = Make(config);
  Request r = Req(1, 50, 2);
  ASSERT_TRUE(s->Add(r).ok());
  std::vector<int> starts, sizes;
  for (;;) {
    StepPlan plan = s->Schedule();
    ASSERT_EQ(plan.entries.size(), 1u);
    const PlanEntry& e = plan.entries[0];
    starts.push_back(e.start_position);
    sizes.push_back(static_cast<int>(e.token_ids.size()));
    EXPECT_EQ(e.block_table.size(), static_cast<size_t>((e.start_position + sizes.back() + 3) / 4));
    EXPECT_TRUE(std::equal(e.token_ids.begin(), e.token_ids.end(),
                           r.prompt_tokens.begin() + e.start_position));
    if (!e.samples) {
      ASSERT_TRUE(s->Update({}).ok());
      continue;
    }
    ASSERT_TRUE(s->Update({{1, 5}}).ok());
    break;
  }
  EXPECT_THAT(starts, ElementsAre(0, 16, 32, 48));
  EXPECT_THAT(sizes, ElementsAre(16, 16, 16, 2));
  EXPECT_EQ(s->num_kv_blocks_used(), 13);  // ceil(50 / 4)
}

TEST(Scheduler, LongPrefillChunkCapsOnePromptPerStep) {
  SchedulerConfig config = SmallConfig();
  config.long_prefill_chunk = 10;
  auto s = Make(config);
  ASSERT_TRUE(s->Add(Req(1, 25, 1)).ok());
  ASSERT_TRUE(s->Add(Req(2, 25, 1)).ok());
  StepPlan plan = s->Schedule();
  ASSERT_EQ(plan.entries.size(), 2u);  // both prompts progress in one step
  EXPECT_EQ(plan.entries[0].token_ids.size(), 10u);
  EXPECT_EQ(plan.entries[1].token_ids.size(), 10u);
  EXPECT_EQ(plan.num_tokens, 20);
}

TEST(Scheduler, EveryRunningSequenceDecodesEachStepBesideAPrefill) {
  SchedulerConfig config = SmallConfig();
  config.max_num_batched_tokens = 16;
  config.long_prefill_chunk = 16;
  auto s = Make(config);
  for (uint64_t id = 0; id < 6; ++id) ASSERT_TRUE(s->Add(Req(id, 2, 40)).ok());
  FakeServingLoop loop(*s, kVocab);
  ASSERT_TRUE(loop.Tick());  // six prompts of 2 tokens in one step
  ASSERT_TRUE(s->Add(Req(9, 100, 3)).ok());
  for (int step = 0; step < 8; ++step) {
    StepPlan plan = s->Schedule();
    EXPECT_EQ(plan.num_decode_entries, 6) << step;
    ASSERT_EQ(plan.entries.size(), 7u) << step;
    // The prompt takes what the six decodes leave.
    EXPECT_EQ(plan.entries[6].seq_id, 9u);
    EXPECT_EQ(plan.entries[6].token_ids.size(), 10u);
    std::vector<SampledToken> results;
    for (const PlanEntry& e : plan.entries) {
      if (e.samples) results.push_back({e.seq_id, 1});
    }
    ASSERT_TRUE(s->Update(results).ok());
  }
}

TEST(Scheduler, FirstComeFirstServedWithinAPriority) {
  SchedulerConfig config = SmallConfig();
  config.max_num_seqs = 1;
  auto s = Make(config);
  for (uint64_t id : {5, 3, 9, 1, 7}) ASSERT_TRUE(s->Add(Req(id, 3, 4)).ok());
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion();
  EXPECT_THAT(FinishOrder(loop), ElementsAre(5, 3, 9, 1, 7));
}

TEST(Scheduler, HigherPriorityFirstAndPreemptsLowerWhenFull) {
  SchedulerConfig config = SmallConfig();
  config.max_num_seqs = 1;
  auto s = Make(config);
  Request a = Req(1, 3, 6, /*priority=*/0);
  ASSERT_TRUE(s->Add(a).ok());
  FakeServingLoop loop(*s, kVocab);
  ASSERT_TRUE(loop.Tick());  // a runs
  ASSERT_TRUE(s->Add(Req(2, 3, 6, 0)).ok());
  ASSERT_TRUE(s->Add(Req(3, 3, 6, 5)).ok());
  ASSERT_TRUE(s->Add(Req(4, 3, 6, 1)).ok());
  loop.RunToCompletion();
  // 3 and 4 outrank a, which goes back to the front of priority 0, ahead of 2.
  EXPECT_THAT(FinishOrder(loop), ElementsAre(3, 4, 1, 2));
  EXPECT_TRUE(loop.preempted().contains(1));
  EXPECT_EQ(loop.finished()[2].output_tokens, Solo(a));
}

TEST(Scheduler, EqualPriorityNeverPreemptsForAdmission) {
  SchedulerConfig config = SmallConfig();
  config.max_num_seqs = 1;
  auto s = Make(config);
  ASSERT_TRUE(s->Add(Req(1, 3, 6)).ok());
  FakeServingLoop loop(*s, kVocab);
  ASSERT_TRUE(loop.Tick());
  ASSERT_TRUE(s->Add(Req(2, 3, 6)).ok());
  loop.RunToCompletion();
  EXPECT_THAT(FinishOrder(loop), ElementsAre(1, 2));
  EXPECT_EQ(s->num_preemptions(), 0u);
}

TEST(Scheduler, PreemptsTheNewestWhenBlocksRunOutAndRecomputesIt) {
  SchedulerConfig config = SmallConfig();
  config.num_kv_blocks = 6;  // 24 tokens
  auto s = Make(config);
  Request a = Req(1, 8, 12);  // needs 19 tokens of KV at the end
  Request b = Req(2, 8, 12);
  ASSERT_TRUE(s->Add(a).ok());
  ASSERT_TRUE(s->Add(b).ok());
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion();
  EXPECT_THAT(loop.preempted(), ElementsAre(2));  // the newest, never the older one
  EXPECT_GE(s->num_preemptions(), 1u);
  EXPECT_THAT(FinishOrder(loop), ElementsAre(1, 2));
  EXPECT_EQ(loop.finished()[0].output_tokens, Solo(a));
  EXPECT_EQ(loop.finished()[1].output_tokens, Solo(b));
  // Streamed once: tokens generated before the preemption were not sent again.
  EXPECT_EQ(loop.streamed().at(2), Solo(b));
}

TEST(Scheduler, VictimIsTheNewestOfTheLowestPriority) {
  for (int b_priority : {1, 0}) {
    SchedulerConfig config = SmallConfig();
    config.num_kv_blocks = 7;
    auto s = Make(config);
    // 12 + 5 + 5 prompt tokens fill the 7 blocks; then the first decode of 1 needs an 8th.
    ASSERT_TRUE(s->Add(Req(1, 12, 4, 1)).ok());
    ASSERT_TRUE(s->Add(Req(2, 5, 4, b_priority)).ok());
    ASSERT_TRUE(s->Add(Req(3, 5, 4, 1)).ok());
    FakeServingLoop loop(*s, kVocab);
    ASSERT_TRUE(loop.Tick());
    EXPECT_EQ(s->num_kv_blocks_free(), 0);
    StepPlan plan = s->Schedule();
    // Equal priorities: the newest (3) goes. Otherwise the lower priority (2), though older.
    EXPECT_THAT(plan.preempted, ElementsAre(b_priority == 1 ? 3 : 2)) << b_priority;
  }
}

TEST(Scheduler, NoAdmissionInAStepThatPreemptedForMemory) {
  SchedulerConfig config = SmallConfig();
  config.num_kv_blocks = 3;
  config.long_prefill_chunk = 4;  // a preempted sequence's first chunk would fit again at once
  auto s = Make(config);
  ASSERT_TRUE(s->Add(Req(1, 4, 8)).ok());
  ASSERT_TRUE(s->Add(Req(2, 4, 8)).ok());
  FakeServingLoop loop(*s, kVocab);
  ASSERT_TRUE(loop.Tick());
  StepPlan plan = s->Schedule();
  // 1 takes the last free block; 2 finds none and nothing below it to preempt: it goes itself,
  // and is not admitted again into the blocks it just gave back.
  EXPECT_THAT(plan.preempted, ElementsAre(2));
  ASSERT_EQ(plan.entries.size(), 1u);
  EXPECT_EQ(plan.entries[0].seq_id, 1u);
  EXPECT_EQ(s->num_waiting(), 1);
}

TEST(Scheduler, WaitsForAVictimInFlightRatherThanPreemptItself) {
  SchedulerConfig config = SmallConfig();
  config.num_kv_blocks = 4;
  auto s = Make(config);
  ASSERT_TRUE(s->Add(Req(1, 8, 8)).ok());
  StepPlan first = s->Schedule();
  ASSERT_TRUE(s->Add(Req(2, 8, 8)).ok());
  StepPlan second = s->Schedule();  // 2 is in flight, holding the other 2 blocks
  ASSERT_TRUE(s->Update({{1, 5}}).ok());
  // 1 needs a third block; its only possible victim is in flight: 1 waits, keeping its cache.
  StepPlan third = s->Schedule();
  EXPECT_TRUE(third.empty());
  EXPECT_THAT(third.preempted, IsEmpty());
  ASSERT_TRUE(s->Update({{2, 6}}).ok());
  StepPlan fourth = s->Schedule();
  EXPECT_THAT(fourth.preempted, ElementsAre(2));
  ASSERT_EQ(fourth.entries.size(), 1u);
  EXPECT_EQ(fourth.entries[0].seq_id, 1u);
  EXPECT_EQ(fourth.entries[0].block_table.size(), 3u);
}

TEST(Scheduler, RecomputeFeedsPromptAndGeneratedTokens) {
  SchedulerConfig config = SmallConfig();
  config.num_kv_blocks = 4;  // 16 tokens
  auto s = Make(config);
  ASSERT_TRUE(s->Add(Req(1, 4, 12)).ok());
  ASSERT_TRUE(s->Add(Req(2, 4, 10)).ok());
  bool saw_recompute = false;
  while (s->has_unfinished()) {
    StepPlan plan = s->Schedule();
    ASSERT_FALSE(plan.empty());
    for (const PlanEntry& e : plan.entries) {
      const Sequence* seq = s->FindSequence(e.seq_id);
      if (e.start_position == 0 && seq->num_output_tokens() > 0) {
        saw_recompute = true;
        EXPECT_EQ(static_cast<int>(e.token_ids.size()), seq->num_tokens());
        EXPECT_TRUE(e.samples);
      }
    }
    std::vector<SampledToken> results;
    for (const PlanEntry& e : plan.entries) {
      if (e.samples) results.push_back({e.seq_id, 7});
    }
    ASSERT_TRUE(s->Update(results).ok());
  }
  EXPECT_TRUE(saw_recompute);
}

TEST(Scheduler, CancelWaitingRunningAndInFlight) {
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(Req(1, 10, 5)).ok());
  StepPlan plan = s->Schedule();  // 1 in flight, holding 3 blocks
  ASSERT_TRUE(s->Update({{1, 9}}).ok());
  ASSERT_TRUE(s->Add(Req(2, 10, 5)).ok());
  plan = s->Schedule();  // 1 decodes, 2 prefills: both in flight
  ASSERT_EQ(plan.entries.size(), 2u);
  ASSERT_TRUE(s->Add(Req(3, 10, 5)).ok());  // waits: the scheduler is not asked again yet
  EXPECT_EQ(s->num_kv_blocks_used(), 6);

  EXPECT_TRUE(s->Cancel(3).ok());  // waiting
  EXPECT_EQ(s->num_waiting(), 0);
  EXPECT_TRUE(s->Cancel(2).ok());  // in flight: blocks come back with the step
  EXPECT_EQ(s->num_running(), 1);
  EXPECT_EQ(s->num_kv_blocks_used(), 6);
  EXPECT_EQ(s->FindSequence(2), nullptr);
  EXPECT_EQ(s->Cancel(2).code(), absl::StatusCode::kNotFound);
  auto done = s->Update({{1, 10}, {2, 11}});  // the workers still answer for 2
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(s->num_kv_blocks_used(), 3);

  EXPECT_TRUE(s->Cancel(1).ok());  // running, idle: freed at once
  EXPECT_EQ(s->num_kv_blocks_used(), 0);
  EXPECT_FALSE(s->has_unfinished());
  absl::Status st = s->Cancel(77);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr("77"));
  EXPECT_EQ(s->Finish(1).code(), absl::StatusCode::kNotFound);
  // The freed id can be used again.
  EXPECT_TRUE(s->Add(Req(2, 3, 1)).ok());
}

TEST(Scheduler, FinishIsTheCallersStopCondition) {
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(Req(1, 4, 50)).ok());
  s->Schedule();
  ASSERT_TRUE(s->Update({{1, 3}}).ok());
  EXPECT_EQ(s->FindSequence(1)->output_tokens(), std::vector<int32_t>{3});
  EXPECT_TRUE(s->Finish(1).ok());
  EXPECT_FALSE(s->has_unfinished());
  EXPECT_EQ(s->num_kv_blocks_used(), 0);
  EXPECT_TRUE(s->Schedule().empty());
}

TEST(Scheduler, UpdateMustMatchTheOldestStep) {
  auto s = Make(SmallConfig());
  auto none = s->Update({});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(s->Add(Req(1, 4, 5)).ok());
  ASSERT_TRUE(s->Add(Req(2, 4, 5)).ok());
  s->Schedule();
  auto missing = s->Update({{1, 3}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("no token for sequence 2"));
  auto extra = s->Update({{1, 3}, {2, 4}, {8, 5}});
  EXPECT_EQ(extra.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(extra.status().message(), HasSubstr("a token for sequence 8"));
  auto twice = s->Update({{1, 3}, {1, 4}});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.status().message(), HasSubstr("two tokens for sequence 1"));
  // Nothing changed: the right answer is still taken.
  EXPECT_EQ(s->num_steps_in_flight(), 1);
  ASSERT_TRUE(s->Update({{2, 4}, {1, 3}}).ok());
  EXPECT_EQ(s->FindSequence(1)->output_tokens(), std::vector<int32_t>{3});
  EXPECT_EQ(s->FindSequence(2)->output_tokens(), std::vector<int32_t>{4});
}

TEST(Scheduler, SequencesInFlightAreNotScheduledAgain) {
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(Req(1, 4, 5)).ok());
  StepPlan first = s->Schedule();
  ASSERT_TRUE(s->Add(Req(2, 4, 5)).ok());
  StepPlan second = s->Schedule();  // a second micro-batch while the first is in flight
  ASSERT_EQ(second.entries.size(), 1u);
  EXPECT_EQ(second.entries[0].seq_id, 2u);
  EXPECT_NE(first.step_id, second.step_id);
  EXPECT_TRUE(s->Schedule().empty());
  EXPECT_EQ(s->num_steps_in_flight(), 2);
  ASSERT_TRUE(s->Update({{1, 3}}).ok());  // answers the first
  StepPlan third = s->Schedule();
  ASSERT_EQ(third.entries.size(), 1u);
  EXPECT_EQ(third.entries[0].seq_id, 1u);
  EXPECT_EQ(third.entries[0].token_ids, std::vector<int32_t>{3});
}

TEST(Scheduler, MicroBatchesSplitTheSequences) {
  auto s = Make(SmallConfig());
  for (uint64_t id = 1; id <= 5; ++id) ASSERT_TRUE(s->Add(Req(id, 3, 4)).ok());
  // Two stages: each micro-batch takes at most ceil(5 / 2) = 3 sequences, first come first.
  StepPlan a = s->Schedule(3);
  StepPlan b = s->Schedule(3);
  ASSERT_EQ(a.entries.size(), 3u);
  ASSERT_EQ(b.entries.size(), 2u);
  EXPECT_EQ(a.entries[0].seq_id, 1u);
  EXPECT_EQ(b.entries[0].seq_id, 4u);
  EXPECT_TRUE(s->Schedule(3).empty());  // everything is in flight
  ASSERT_TRUE(s->Update({{1, 7}, {2, 7}, {3, 7}}).ok());
  StepPlan c = s->Schedule(3);  // the first micro-batch decodes while the second is in flight
  ASSERT_EQ(c.entries.size(), 3u);
  for (const PlanEntry& e : c.entries) EXPECT_EQ(e.token_ids.size(), 1u);
  EXPECT_EQ(s->Schedule(0).entries.size(), 0u);  // (nothing idle; a cap below 1 means 1)
}

TEST(Scheduler, AbortedStepsAreRecomputedWithTheSameOutput) {
  auto s = Make(SmallConfig());
  Request a = Req(1, 9, 6), b = Req(2, 5, 6);
  ASSERT_TRUE(s->Add(a).ok());
  ASSERT_TRUE(s->Add(b).ok());
  FakeServingLoop loop(*s, kVocab, /*steps_in_flight=*/1);
  ASSERT_TRUE(loop.Tick());
  ASSERT_TRUE(loop.Tick());
  s->Schedule();  // lost with its worker
  std::vector<uint64_t> requeued = s->AbortInFlightSteps();
  EXPECT_THAT(requeued, ElementsAre(1, 2));
  EXPECT_EQ(s->num_steps_in_flight(), 0);
  EXPECT_EQ(s->num_kv_blocks_used(), 0);
  EXPECT_EQ(s->num_waiting(), 2);
  loop.RunToCompletion();
  EXPECT_EQ(loop.streamed().at(1), Solo(a));
  EXPECT_EQ(loop.streamed().at(2), Solo(b));
}

}  // namespace
}  // namespace bitserve::scheduler
