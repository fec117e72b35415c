#include "scheduler/fake_serving_loop.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace bitserve::scheduler {

FakeServingLoop::FakeServingLoop(Scheduler& scheduler, int vocab_size, int steps_in_flight)
    : scheduler_(scheduler),
      engine_(scheduler.config().num_kv_blocks, scheduler.config().block_size, vocab_size),
      steps_in_flight_(steps_in_flight) {}

bool FakeServingLoop::Tick() {
  while (static_cast<int>(in_flight_.size()) < steps_in_flight_) {
    StepPlan plan = scheduler_.Schedule();
    if (plan.empty()) break;
    CheckPlan(plan);
    preempted_.insert(plan.preempted.begin(), plan.preempted.end());
    in_flight_.push_back(std::move(plan));
  }
  if (in_flight_.empty()) {
    EXPECT_FALSE(scheduler_.has_unfinished())
        << "stuck: " << scheduler_.num_waiting() << " waiting, " << scheduler_.num_running()
        << " running, nothing scheduled and nothing in flight";
    return false;
  }
  ++ticks_;
  const StepPlan& plan = in_flight_.front();
  std::vector<SampledToken> results = engine_.Run(plan);
  for (const SampledToken& r : results) {
    // A sequence cancelled while in flight still gets its token from the workers; the caller
    // would drop it, and so does this loop.
    if (scheduler_.FindSequence(r.seq_id) == nullptr) continue;
    streamed_[r.seq_id].push_back(r.token);
    first_token_tick_.emplace(r.seq_id, ticks_);
  }
  auto finished = scheduler_.Update(results);
  EXPECT_TRUE(finished.ok()) << finished.status();
  if (finished.ok()) {
    for (FinishedSequence& f : *finished) {
      EXPECT_EQ(f.output_tokens, streamed_[f.id]) << "sequence " << f.id;
      finish_tick_[f.id] = ticks_;
      finished_.push_back(std::move(f));
    }
  }
  for (const SampledToken& r : results) {
    if (r.token != stop_token_ || scheduler_.FindSequence(r.seq_id) == nullptr) continue;
    EXPECT_TRUE(scheduler_.Finish(r.seq_id).ok());
    stopped_.insert(r.seq_id);
    finish_tick_[r.seq_id] = ticks_;
  }
  EXPECT_EQ(scheduler_.num_steps_in_flight(), static_cast<int>(in_flight_.size()) - 1);
  in_flight_.pop_front();
  return true;
}

void FakeServingLoop::RunToCompletion(const std::function<bool(int)>& before_tick, int max_ticks) {
  for (int tick = 0;; ++tick) {
    ASSERT_LT(tick, max_ticks) << "not done after " << max_ticks << " ticks";
    const bool more_to_come = before_tick && before_tick(tick);
    // An idle tick (nothing to run) is fine while requests are still to come.
    if (!Tick() && !more_to_come) break;
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_EQ(scheduler_.num_kv_blocks_used(), 0);
  EXPECT_EQ(scheduler_.num_kv_blocks_free(), scheduler_.config().num_kv_blocks);
  EXPECT_EQ(scheduler_.num_waiting(), 0);
  EXPECT_EQ(scheduler_.num_running(), 0);
}

void FakeServingLoop::CheckPlan(const StepPlan& plan) {
  const SchedulerConfig& config = scheduler_.config();
  std::set<uint64_t> busy;
  // Blocks are shared (prefix caching) only while no step writes them: a block an entry writes
  // (one holding a position in [start_position, end)) is in no other table of the steps in flight.
  std::map<int32_t, std::set<uint64_t>> holders;
  std::map<int32_t, uint64_t> writer;
  auto record = [&](const PlanEntry& e) {
    const int first_written = static_cast<int>(e.start_position / config.block_size);
    for (size_t i = 0; i < e.block_table.size(); ++i) {
      holders[e.block_table[i]].insert(e.seq_id);
      if (static_cast<int>(i) >= first_written) writer[e.block_table[i]] = e.seq_id;
    }
  };
  for (const StepPlan& other : in_flight_) {
    for (const PlanEntry& e : other.entries) {
      busy.insert(e.seq_id);
      record(e);
    }
  }
  for (const PlanEntry& e : plan.entries) record(e);
  for (const auto& [block, seq] : writer) {
    EXPECT_EQ(holders[block].size(), 1u)
        << "step " << plan.step_id << ": block " << block << " is written by sequence " << seq
        << " and held by " << holders[block].size() << " sequences";
  }
  int tokens = 0;
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const PlanEntry& e = plan.entries[i];
    const int n = static_cast<int>(e.token_ids.size());
    tokens += n;
    EXPECT_TRUE(busy.insert(e.seq_id).second)
        << "step " << plan.step_id << ": sequence " << e.seq_id << " is already in a step";
    const bool decode = n == 1 && e.start_position > 0;
    EXPECT_EQ(decode, static_cast<int>(i) < plan.num_decode_entries) << "entry " << i;
    EXPECT_GE(n, 1);
    if (!decode) {
      EXPECT_LE(n, config.long_prefill_chunk);
    }
    const int64_t end = e.start_position + n;
    EXPECT_EQ(static_cast<int64_t>(e.block_table.size()),
              (end + config.block_size - 1) / config.block_size)
        << "sequence " << e.seq_id << " at [" << e.start_position << ", " << end << ")";
    std::set<int32_t> own;
    for (int32_t b : e.block_table) {
      EXPECT_TRUE(b >= 0 && b < config.num_kv_blocks) << b;
      EXPECT_TRUE(own.insert(b).second) << "block " << b << " twice in sequence " << e.seq_id;
    }
    const Sequence* seq = scheduler_.FindSequence(e.seq_id);
    if (seq == nullptr) {
      ADD_FAILURE() << "unknown sequence " << e.seq_id;
      continue;
    }
    EXPECT_EQ(e.samples, end == seq->num_tokens());
    EXPECT_TRUE(std::equal(e.token_ids.begin(), e.token_ids.end(),
                           seq->tokens().begin() + e.start_position))
        << "sequence " << e.seq_id;
  }
  EXPECT_EQ(tokens, plan.num_tokens);
  EXPECT_LE(plan.num_tokens, config.max_num_batched_tokens);
  EXPECT_EQ(plan.num_tokens, scheduler_.num_tokens_last_step());
  EXPECT_LE(scheduler_.num_running(), config.max_num_seqs);
  max_tokens_in_a_step_ = std::max(max_tokens_in_a_step_, plan.num_tokens);
}

}  // namespace bitserve::scheduler
