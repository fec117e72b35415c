#include "scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"

namespace bitserve::scheduler {

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerConfig& config) {
  RETURN_IF_ERROR(config.Validate());
  return std::unique_ptr<Scheduler>(new Scheduler(config));
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config), kv_blocks_(config.num_kv_blocks, config.block_size, config.num_kv_pools) {}

absl::Status Scheduler::Add(Request request) {
  const uint64_t id = request.id;
  if (request.prompt_tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, ": prompt_tokens is empty"));
  }
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", id, ": max_new_tokens must be >= 1, got ", request.max_new_tokens));
  }
  for (size_t i = 0; i < request.prompt_tokens.size(); ++i) {
    if (request.prompt_tokens[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("request ", id, ": prompt_tokens[", i, "] is ",
                                                     request.prompt_tokens[i],
                                                     ", token ids are >= 0"));
    }
  }
  if (sequences_.contains(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": duplicate id, a sequence with this id is unfinished"));
  }
  const int64_t prompt = static_cast<int64_t>(request.prompt_tokens.size());
  const int64_t total = prompt + request.max_new_tokens;
  if (total > config_.max_model_len) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request ", id, ": prompt of ", prompt, " tokens + max_new_tokens ", request.max_new_tokens,
        " = ", total, " tokens exceeds max_model_len ", config_.max_model_len));
  }
  // The last sampled token is never fed back, so its K/V are never written.
  const int64_t kv_tokens = total - 1;
  if (kv_tokens > kv_blocks_.pool_capacity_tokens()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request ", id, ": prompt of ", prompt, " tokens + max_new_tokens ", request.max_new_tokens,
        " needs ", kv_tokens, " tokens of KV cache, more than its whole capacity of ",
        kv_blocks_.pool_capacity_tokens(), " tokens (", kv_blocks_.pool_blocks(), " blocks of ",
        kv_blocks_.block_size(),
        kv_blocks_.num_pools() > 1 ? " on each expert-parallel rank, which holds a sequence alone"
                                   : "",
        ")"));
  }
  if (num_waiting() >= config_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue full: ", num_waiting(), " waiting, limit ", config_.max_waiting));
  }
  auto seq = std::make_unique<Sequence>(std::move(request), next_arrival_++);
  waiting_.emplace(KeyOf(*seq), seq.get());
  sequences_.emplace(id, std::move(seq));
  return absl::OkStatus();
}

StepPlan Scheduler::Schedule(int max_sequences) {
  StepBuilder step;
  step.budget = config_.max_num_batched_tokens;
  step.max_sequences = std::max(1, max_sequences);
  PreemptForWaitingPriority(step);
  if (!ScheduleRunning(step)) AdmitWaiting(step);

  StepPlan plan;
  plan.step_id = next_step_id_++;
  plan.num_decode_entries = static_cast<int>(step.decodes.size());
  plan.entries = std::move(step.decodes);
  plan.entries.insert(plan.entries.end(), std::make_move_iterator(step.prefills.begin()),
                      std::make_move_iterator(step.prefills.end()));
  plan.num_tokens = config_.max_num_batched_tokens - step.budget;
  plan.preempted = std::move(step.preempted);
  num_tokens_last_step_ = plan.num_tokens;
  if (!plan.empty()) {
    InFlightStep& record = in_flight_.emplace_back();
    record.step_id = plan.step_id;
    for (const PlanEntry& e : plan.entries) record.entries.push_back({e.seq_id, e.samples});
  }
  return plan;
}

void Scheduler::PreemptForWaitingPriority(StepBuilder& step) {
  if (waiting_.empty()) return;
  const Sequence& head = *waiting_.begin()->second;
  const int64_t first_chunk = std::min(
      {head.num_pending_tokens(), config_.long_prefill_chunk, config_.max_num_batched_tokens});
  const int64_t blocks = kv_blocks_.BlocksForTokens(first_chunk);
  while (num_running() >= config_.max_num_seqs || kv_blocks_.PoolFor(blocks) < 0) {
    // Short of blocks: victims from the pool closest to fitting the head.
    int pool = -1;
    if (kv_blocks_.PoolFor(blocks) < 0) {
      pool = 0;
      for (int p = 1; p < kv_blocks_.num_pools(); ++p) {
        if (kv_blocks_.num_free_blocks(p) > kv_blocks_.num_free_blocks(pool)) pool = p;
      }
    }
    Sequence* victim = LowestIdleRunning(nullptr, pool);
    // Only strictly lower priorities: within one, first come first served is the rule.
    if (victim == nullptr || victim->priority() >= head.priority()) break;
    Preempt(*victim);
    step.preempted.push_back(victim->id());
    ++num_preemptions_;
  }
}

bool Scheduler::ScheduleRunning(StepBuilder& step) {
  // A snapshot: preemption below edits running_, and only ever takes sequences not yet visited.
  std::vector<Sequence*> order;
  order.reserve(running_.size());
  // Decodes not yet visited, each owed one token of the budget. The budget can always pay them
  // (max_num_seqs <= max_num_batched_tokens), so a prefill chunk never starves a decode.
  int owed = 0;
  auto is_idle_decode = [](const Sequence& s) {
    return !s.in_flight() && s.num_pending_tokens() == 1;
  };
  for (const auto& [key, seq] : running_) {
    order.push_back(seq);
    if (is_idle_decode(*seq)) ++owed;
  }

  bool preempted = false;
  for (Sequence* seq : order) {
    if (step.full()) break;
    if (seq->state() != SequenceState::kRunning || seq->in_flight()) continue;
    const bool decode = seq->num_pending_tokens() == 1;
    if (decode) --owed;
    int n = 1;
    if (!decode) {
      n = std::min({seq->num_pending_tokens(), config_.long_prefill_chunk, step.budget - owed});
    }
    if (n <= 0) continue;
    const int64_t needed = int64_t{seq->num_computed_tokens()} + n;
    bool fits = kv_blocks_.TryGrow(seq->id(), needed);
    const int pool = kv_blocks_.PoolOf(seq->id());
    while (!fits) {
      Sequence* victim = LowestIdleRunning(seq, pool);
      if (victim == nullptr) break;
      if (is_idle_decode(*victim)) --owed;
      Preempt(*victim);
      step.preempted.push_back(victim->id());
      ++num_preemptions_;
      preempted = true;
      fits = kv_blocks_.TryGrow(seq->id(), needed);
    }
    if (!fits) {
      // Lower sequences in flight become victims once their step returns: wait for them rather
      // than throw away this sequence's cache.
      if (HasInFlightBelow(*seq, pool)) continue;
      Preempt(*seq);
      step.preempted.push_back(seq->id());
      ++num_preemptions_;
      preempted = true;
      continue;
    }
    BITSERVE_CHECK(n <= step.budget)
        << "sequence " << seq->id() << ": " << n << " tokens, budget " << step.budget;
    step.budget -= n;
    Emit(*seq, n, step);
  }
  return preempted;
}

void Scheduler::AdmitWaiting(StepBuilder& step) {
  const int block_size = kv_blocks_.block_size();
  while (!waiting_.empty() && num_running() < config_.max_num_seqs && step.budget > 0 &&
         !step.full()) {
    Sequence& seq = *waiting_.begin()->second;
    // The blocks its tokens could find cached: full ones, short of its last token (computed in
    // any case: its logits give the next token).
    std::span<const BlockHash> hashes;
    if (config_.enable_prefix_caching) {
      const std::vector<BlockHash>& all = seq.FullBlockHashes(block_size);
      hashes = std::span<const BlockHash>(all).first(
          std::min(all.size(), static_cast<size_t>((seq.num_tokens() - 1) / block_size)));
    }
    // Its pool (expert-parallel rank): the longest cached prefix among those with room for its
    // first chunk, then the least loaded (PoolFor's order). Head-of-line: when the head does not
    // fit, nothing behind it is admitted either, or a long prompt could wait forever behind a
    // stream of short ones.
    int pool = -1, cached_blocks = 0, n = 0;
    for (int p = 0; p < kv_blocks_.num_pools(); ++p) {
      const KvBlockAllocator::PrefixMatch match =
          hashes.empty() ? KvBlockAllocator::PrefixMatch{} : kv_blocks_.MatchPrefix(p, hashes);
      const int cached = match.blocks * block_size;
      const int chunk =
          std::min({seq.num_tokens() - cached, config_.long_prefill_chunk, step.budget});
      const int64_t new_blocks = kv_blocks_.BlocksForTokens(cached + chunk) - match.blocks;
      if (kv_blocks_.num_free_blocks(p) - match.idle < new_blocks) continue;
      const bool better = pool < 0 || match.blocks > cached_blocks ||
                          (match.blocks == cached_blocks &&
                           (kv_blocks_.num_sequences(p) < kv_blocks_.num_sequences(pool) ||
                            (kv_blocks_.num_sequences(p) == kv_blocks_.num_sequences(pool) &&
                             kv_blocks_.num_free_blocks(p) > kv_blocks_.num_free_blocks(pool))));
      if (better) pool = p, cached_blocks = match.blocks, n = chunk;
    }
    if (pool < 0) break;
    const int cached = cached_blocks * block_size;
    kv_blocks_.AttachPrefix(seq.id(), pool, hashes, cached_blocks);
    BITSERVE_CHECK(kv_blocks_.TryGrow(seq.id(), cached + n, pool))
        << "sequence " << seq.id() << ": " << cached + n << " tokens in pool " << pool;
    if (config_.enable_prefix_caching) {
      prefix_cache_queries_ += seq.num_tokens();
      prefix_cache_hits_ += cached;
      seq.SetCachedPrefix(cached);
      seq.set_num_published_blocks(cached_blocks);
    }
    waiting_.erase(waiting_.begin());
    running_.emplace(KeyOf(seq), &seq);
    seq.set_state(SequenceState::kRunning);
    step.budget -= n;
    Emit(seq, n, step);
  }
}

void Scheduler::Emit(Sequence& seq, int num_tokens, StepBuilder& step) {
  PlanEntry entry;
  entry.seq_id = seq.id();
  entry.start_position = seq.num_computed_tokens();
  const auto first = seq.tokens().begin() + entry.start_position;
  entry.token_ids.assign(first, first + num_tokens);
  entry.samples = entry.start_position + num_tokens == seq.num_tokens();
  entry.block_table = kv_blocks_.block_table(seq.id());
  BITSERVE_CHECK(static_cast<int64_t>(entry.block_table.size()) ==
                 kv_blocks_.BlocksForTokens(entry.start_position + num_tokens))
      << "sequence " << seq.id() << " holds " << entry.block_table.size() << " blocks for "
      << entry.start_position + num_tokens << " tokens";
  seq.MarkScheduled(num_tokens);
  const bool is_decode = num_tokens == 1 && entry.start_position > 0;
  (is_decode ? step.decodes : step.prefills).push_back(std::move(entry));
}

bool Scheduler::InPool(const Sequence& seq, int pool) const {
  return pool < 0 || kv_blocks_.PoolOf(seq.id()) == pool;
}

Sequence* Scheduler::LowestIdleRunning(const Sequence* above, int pool) const {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    if (it->second == above) return nullptr;
    if (!it->second->in_flight() && InPool(*it->second, pool)) return it->second;
  }
  return nullptr;
}

bool Scheduler::HasInFlightBelow(const Sequence& seq, int pool) const {
  for (auto it = running_.rbegin(); it != running_.rend() && it->second != &seq; ++it) {
    if (it->second->in_flight() && InPool(*it->second, pool)) return true;
  }
  return false;
}

void Scheduler::PublishComputedBlocks(Sequence& seq) {
  const int block_size = kv_blocks_.block_size();
  const int full = seq.num_computed_tokens() / block_size;
  if (seq.num_published_blocks() >= full) return;
  const std::vector<BlockHash>& hashes = seq.FullBlockHashes(block_size);
  for (int i = seq.num_published_blocks(); i < full; ++i)
    kv_blocks_.Publish(seq.id(), i, hashes[i]);
  seq.set_num_published_blocks(full);
}

void Scheduler::Preempt(Sequence& seq) {
  BITSERVE_CHECK(seq.state() == SequenceState::kRunning) << "sequence " << seq.id();
  kv_blocks_.Free(seq.id());
  seq.DropCache();
  running_.erase(KeyOf(seq));
  waiting_.emplace(KeyOf(seq), &seq);
  seq.set_state(SequenceState::kWaiting);
}

absl::StatusOr<std::vector<FinishedSequence>> Scheduler::Update(
    const std::vector<SampledToken>& results) {
  if (in_flight_.empty()) {
    return absl::FailedPreconditionError("Update without a step in flight");
  }
  const InFlightStep& step = in_flight_.front();
  // Checked in full before anything changes, so a bad answer leaves the step in flight.
  absl::flat_hash_set<uint64_t> sampled;
  for (const InFlightEntry& e : step.entries) {
    if (e.samples) sampled.insert(e.seq_id);
  }
  absl::flat_hash_map<uint64_t, int32_t> tokens;
  for (const SampledToken& r : results) {
    if (!sampled.contains(r.seq_id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step ", step.step_id, ": a token for sequence ", r.seq_id, ", which it did not sample"));
    }
    if (!tokens.emplace(r.seq_id, r.token).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step.step_id, ": two tokens for sequence ", r.seq_id));
    }
  }
  if (tokens.size() != sampled.size()) {
    for (uint64_t id : sampled) {
      if (!tokens.contains(id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("step ", step.step_id, ": no token for sequence ", id));
      }
    }
  }

  std::vector<FinishedSequence> finished;
  for (const InFlightEntry& e : step.entries) {
    Sequence& seq = *sequences_.at(e.seq_id);
    seq.MarkStepDone();
    if (seq.state() == SequenceState::kReleased) {
      Forget(e.seq_id);
      continue;
    }
    if (config_.enable_prefix_caching) PublishComputedBlocks(seq);
    if (!e.samples) continue;
    seq.AppendToken(tokens.at(e.seq_id));
    if (seq.num_output_tokens() >= seq.max_new_tokens() ||
        seq.num_tokens() >= config_.max_model_len) {
      finished.push_back({seq.id(), seq.num_prompt_tokens(), seq.output_tokens()});
      running_.erase(KeyOf(seq));
      Forget(e.seq_id);
    }
  }
  in_flight_.pop_front();
  return finished;
}

absl::Status Scheduler::Finish(uint64_t id) { return Release(id, "Finish"); }

absl::Status Scheduler::Cancel(uint64_t id) { return Release(id, "Cancel"); }

absl::Status Scheduler::Release(uint64_t id, const char* what) {
  auto it = sequences_.find(id);
  if (it == sequences_.end() || it->second->state() == SequenceState::kReleased) {
    return absl::NotFoundError(absl::StrCat(what, ": no waiting or running sequence with id ", id));
  }
  Sequence& seq = *it->second;
  (seq.state() == SequenceState::kWaiting ? waiting_ : running_).erase(KeyOf(seq));
  if (seq.in_flight()) {
    // The workers may still be writing its blocks; Update frees them when the step returns.
    seq.set_state(SequenceState::kReleased);
    return absl::OkStatus();
  }
  Forget(id);
  return absl::OkStatus();
}

std::vector<uint64_t> Scheduler::AbortInFlightSteps() {
  std::vector<uint64_t> requeued;
  for (const InFlightStep& step : in_flight_) {
    for (const InFlightEntry& e : step.entries) {
      Sequence& seq = *sequences_.at(e.seq_id);
      seq.MarkStepDone();
      if (seq.state() == SequenceState::kReleased) {
        Forget(e.seq_id);
        continue;
      }
      Preempt(seq);
      requeued.push_back(e.seq_id);
    }
  }
  in_flight_.clear();
  return requeued;
}

const Sequence* Scheduler::FindSequence(uint64_t id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end() || it->second->state() == SequenceState::kReleased) return nullptr;
  return it->second.get();
}

void Scheduler::Forget(uint64_t id) {
  kv_blocks_.Free(id);
  sequences_.erase(id);
}

}  // namespace bitserve::scheduler
