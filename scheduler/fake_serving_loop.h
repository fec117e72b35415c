// Test support: the coordinator's loop around a Scheduler and a FakeEngine. It keeps up to
// steps_in_flight plans in flight (as pipeline stages will), runs the oldest on the engine and
// answers it with Update, and checks every plan against the scheduler's invariants (budget,
// chunk size, block tables, each sequence in at most one plan in flight) as it goes.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "scheduler/fake_engine.h"
#include "scheduler/scheduler.h"

namespace bitserve::scheduler {

class FakeServingLoop {
 public:
  FakeServingLoop(Scheduler& scheduler, int vocab_size, int steps_in_flight = 1);

  // Fills the pipeline, then runs and answers its oldest plan. False when there was nothing to
  // run; a test failure when that happens while requests are unfinished (the scheduler is stuck).
  bool Tick();
  // Ticks until no request is unfinished and none is to come, calling before_tick(tick) first
  // each time (to add or cancel requests); it returns whether more requests are still to come.
  // Fails the test after max_ticks.
  void RunToCompletion(const std::function<bool(int)>& before_tick = nullptr,
                       int max_ticks = 1000000);

  // The caller's stop condition: a sequence that samples this token is finished with Finish.
  void set_stop_token(int32_t token) { stop_token_ = token; }

  int ticks() const { return ticks_; }
  // Tokens streamed to each request (as Update returned them), and those finished by length, in
  // the order they finished.
  const std::map<uint64_t, std::vector<int32_t>>& streamed() const { return streamed_; }
  const std::vector<FinishedSequence>& finished() const { return finished_; }
  // Tick at which each request got its first token / finished.
  const std::map<uint64_t, int>& first_token_tick() const { return first_token_tick_; }
  const std::map<uint64_t, int>& finish_tick() const { return finish_tick_; }
  int max_tokens_in_a_step() const { return max_tokens_in_a_step_; }
  // Sequences finished through Finish by the stop token.
  const std::set<uint64_t>& stopped() const { return stopped_; }
  // Sequences that some plan reported as preempted.
  const std::set<uint64_t>& preempted() const { return preempted_; }
  const std::deque<StepPlan>& in_flight() const { return in_flight_; }

 private:
  void CheckPlan(const StepPlan& plan);

  Scheduler& scheduler_;
  FakeEngine engine_;
  int steps_in_flight_;
  std::deque<StepPlan> in_flight_;
  int ticks_ = 0;
  int max_tokens_in_a_step_ = 0;
  int32_t stop_token_ = -1;
  std::map<uint64_t, std::vector<int32_t>> streamed_;
  std::vector<FinishedSequence> finished_;
  std::map<uint64_t, int> first_token_tick_;
  std::map<uint64_t, int> finish_tick_;
  std::set<uint64_t> stopped_;
  std::set<uint64_t> preempted_;
};

}  // namespace bitserve::scheduler
