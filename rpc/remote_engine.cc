// The Engine that drives a hub's pipeline of workers (WorkerHub::MakeEngine, rpc/worker_hub.h):
// every step plan goes to every stage; the last answers with the sampled tokens. With expert
// parallelism each plan is split by rank first: entry -> the rank whose KV pool holds its blocks,
// with its block ids made local to that rank; every worker gets its rank's part, and the last
// stage's ranks' tokens are put back in the plan's order.
#include <algorithm>
#include <deque>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "rpc/worker_hub.h"
#include "rpc/worker_link.h"
#include "rpc/worker_protocol.h"

namespace bitserve::rpc {

// Steps go to every stage of the pipeline; the limits are the first pipeline's.
class WorkerHub::RemoteEngine final : public Engine {
 public:
  explicit RemoteEngine(WorkerHub* hub) : hub_(hub) {}

  const ModelConfig& config() const override { return hub_->config_; }
  int block_size() const override { return hub_->block_size_; }
  int64_t max_model_len() const override { return hub_->max_model_len_; }
  int max_batch_tokens() const override { return hub_->max_batch_tokens_; }
  std::string device_name() const override { return hub_->device_name_; }
  KvDtype kv_dtype() const override { return hub_->kv_dtype_; }
  KvRotation kv_rotation() const override { return hub_->kv_rotation_; }
  // Every worker was checked to hold the head as asked (WorkerHub::AcceptReady).
  LmHeadDtype lm_head_dtype() const override { return hub_->options_.engine.lm_head_dtype; }
  // One pool of blocks per expert-parallel rank: the first pipeline's per-worker blocks each.
  int num_kv_blocks() const override { return hub_->num_kv_blocks_ * ep(); }
  int num_kv_pools() const override { return ep(); }
  absl::Status Health() const override { return hub_->Health(); }

  absl::Status Forward(std::span<const BatchEntry>, std::vector<float>*) override {
    return absl::UnimplementedError(
        "logits are not sent over the worker protocol; only sampled tokens come back (Step)");
  }

  int max_steps_in_flight() const override { return hub_->options_.num_stages; }
  int ep() const { return hub_->options_.expert_parallel; }

  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override {
    {
      std::lock_guard<std::mutex> lock(hub_->mu_);
      if (!in_flight_.empty())
        return absl::FailedPreconditionError("Step with pipelined steps in flight");
    }
    RETURN_IF_ERROR(StartStep(entries, samples));
    return FinishStep(results);
  }

  absl::Status StartStep(std::span<const BatchEntry> entries,
                         std::span<const SampleSpec> samples) override {
    WorkerHub& h = *hub_;
    const int num_stages = h.options_.num_stages;
    InFlight step;
    {
      std::lock_guard<std::mutex> lock(h.mu_);
      if (h.shutting_down_) return absl::UnavailableError("the coordinator is shutting down");
      if (static_cast<int>(in_flight_.size()) >= num_stages) {
        return absl::FailedPreconditionError(absl::StrCat(in_flight_.size(),
                                                          " steps in flight already, the most a ",
                                                          num_stages, "-stage pipeline takes"));
      }
      if (absl::Status health = h.HealthLocked(); !health.ok()) {
        seen_epoch_ = 0;
        return health;
      }
      if (seen_epoch_ != 0 && seen_epoch_ != h.epoch_) {
        // The sequences the caller still runs had their KV cache on the lost pipeline.
        seen_epoch_ = 0;
        return absl::UnavailableError(absl::StrCat(
            h.last_loss_,
            "; the workers were replaced, and the KV cache of the running sequences is gone"));
      }
      seen_epoch_ = h.epoch_;
      step.id = h.next_step_++;
      step.links = h.pipeline_;
    }
    // Each rank's part of the plan (the whole plan without expert parallelism).
    const int ranks = ep();
    const int pool_blocks = h.num_kv_blocks_;
    std::vector<std::vector<BatchEntry>> entries_of(ranks);
    std::vector<std::vector<SampleSpec>> samples_of(ranks);
    std::vector<std::vector<int32_t>> tables(entries.size());
    step.sample_slots.assign(ranks, {});
    size_t next_sample = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      BatchEntry e = entries[i];
      int rank = 0;
      if (ranks > 1) {
        if (e.block_table.empty()) {
          return absl::InvalidArgumentError(absl::StrCat("entry ", i, " has no KV blocks"));
        }
        rank = e.block_table[0] / pool_blocks;
        for (int32_t b : e.block_table) {
          if (b < 0 || b / pool_blocks != rank || rank >= ranks) {
            return absl::InvalidArgumentError(absl::StrCat(
                "entry ", i, ": block ", b, " is not in the KV pool of expert-parallel rank ", rank,
                " (blocks [", rank * pool_blocks, ", ", (rank + 1) * pool_blocks, "))"));
          }
          tables[i].push_back(b - rank * pool_blocks);
        }
        e.block_table = tables[i];
      }
      entries_of[rank].push_back(e);
      if (e.logits == LogitsWanted::kLast && next_sample < samples.size()) {
        samples_of[rank].push_back(samples[next_sample]);
        step.sample_slots[rank].push_back(next_sample++);
      }
    }
    step.samples = samples.size();
    std::vector<wire::CoordinatorMessage> messages(ranks);
    for (int r = 0; r < ranks && ranks > 1 && h.options_.metrics != nullptr; ++r) {
      int64_t tokens = 0;
      for (const BatchEntry& e : entries_of[r]) tokens += static_cast<int64_t>(e.tokens.size());
      h.options_.metrics->RankTokens(r, tokens);
    }
    for (int r = 0; r < ranks; ++r) {
      messages[r].mutable_step()->set_step_id(step.id);
      EncodeStep(entries_of[r], samples_of[r], messages[r].mutable_step());
    }
    {
      std::lock_guard<std::mutex> lock(h.mu_);
      in_flight_.push_back(step);
      if (h.options_.metrics)
        h.options_.metrics->SetStepsInFlight(static_cast<int>(in_flight_.size()));
    }
    for (auto& link : step.links) {
      if (!link->Write(messages[link->ep_rank])) {
        std::lock_guard<std::mutex> lock(h.mu_);
        h.MarkLost(*link, "the step could not be sent (stream closed)");
      }
    }
    return absl::OkStatus();
  }

  absl::Status FinishStep(std::vector<SampleResult>* results) override {
    WorkerHub& h = *hub_;
    std::unique_lock<std::mutex> lock(h.mu_);
    if (in_flight_.empty()) return absl::FailedPreconditionError("no step in flight");
    const InFlight step = in_flight_.front();
    in_flight_.pop_front();
    if (h.options_.metrics)
      h.options_.metrics->SetStepsInFlight(static_cast<int>(in_flight_.size()));
    auto answered = [&](const Link& l) { return l.results.contains(step.id); };
    // A stage that will not answer; the error then names the stage whose loss broke the pipeline
    // (the others were only told to rejoin), whether or not that one answered this step.
    auto lost = [&]() -> const Link* {
      const Link* unanswered = nullptr;
      for (auto& link : step.links) {
        if (link->lost && !answered(*link)) {
          unanswered = link.get();
          break;
        }
      }
      if (unanswered == nullptr) return nullptr;
      for (auto& link : step.links) {
        if (link->lost && !link->lost_by_peer) return link.get();
      }
      return unanswered;
    };
    h.changed_.wait(lock, [&] {
      return h.shutting_down_ || lost() != nullptr ||
             std::all_of(step.links.begin(), step.links.end(),
                         [&](const auto& l) { return answered(*l); });
    });
    std::vector<wire::StepResult> answers;
    for (auto& link : step.links) {
      auto it = link->results.find(step.id);
      if (it == link->results.end()) continue;
      answers.push_back(std::move(it->second));
      link->results.erase(it);
    }
    if (h.shutting_down_ && answers.size() < step.links.size()) {
      seen_epoch_ = 0;
      return absl::UnavailableError("the coordinator is shutting down");
    }
    if (const Link* gone = lost()) {
      seen_epoch_ = 0;
      return absl::UnavailableError(
          absl::StrCat("worker ", gone->Name(), " lost during a step: ", gone->lost_reason));
    }
    lock.unlock();
    for (size_t i = 0; i < answers.size(); ++i) {
      if (absl::Status s =
              CheckExpertLoad(answers[i], h.config_.num_hidden_layers, h.config_.num_experts);
          !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("worker ", step.links[i]->Name(), ": ", s.message()));
      }
    }
    if (ServingMetrics* metrics = h.options_.metrics) {
      for (size_t i = 0; i < answers.size(); ++i) {
        const Link& link = *step.links[i];
        metrics->StageStepDone(link.stage, answers[i].compute_seconds(),
                               answers[i].transfer_seconds());
        if (ep() > 1) {
          metrics->ExpertExchangeDone(link.stage, link.ep_rank,
                                      answers[i].expert_exchange_seconds());
        }
        for (const wire::ExpertLoad& load : answers[i].expert_load()) {
          for (int e = 0; e < load.rows_size(); ++e) {
            metrics->ExpertTokens(load.layer(), e, link.ep_rank, load.rows(e));
          }
        }
      }
    }
    for (size_t i = 0; i < step.links.size(); ++i) {
      if (absl::Status s = StatusFromProto(answers[i].status()); !s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat("worker ", step.links[i]->Name(), ": ", s.message()));
      }
    }
    // The last stage's ranks answer for their own entries, in the plan's order.
    const int ranks = ep();
    results->assign(step.samples, SampleResult{});
    for (int r = 0; r < ranks; ++r) {
      const size_t last = answers.size() - ranks + r;
      ASSIGN_OR_RETURN(
          std::vector<SampleResult> mine,
          DecodeResults(answers[last], step.sample_slots[r].size(), h.config_.vocab_size));
      for (size_t j = 0; j < mine.size(); ++j) {
        (*results)[step.sample_slots[r][j]] = std::move(mine[j]);
      }
    }
    return absl::OkStatus();
  }

 private:
  struct InFlight {
    uint64_t id = 0;
    std::vector<std::shared_ptr<Link>> links;  // in slot order: stage * EP + rank
    size_t samples = 0;
    // Per EP rank: the index in the plan's samples of each sample sent to it, in order.
    std::vector<std::vector<size_t>> sample_slots;
  };
  WorkerHub* hub_;
  // Under hub mu_: the pipeline epoch the caller's KV state lives on, and the started steps.
  uint64_t seen_epoch_ = 0;
  std::deque<InFlight> in_flight_;
};

std::unique_ptr<Engine> WorkerHub::MakeEngine() { return std::make_unique<RemoteEngine>(this); }

}  // namespace bitserve::rpc
