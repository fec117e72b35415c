#include "rpc/worker_hub.h"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "rpc/worker_protocol.h"
#include "runtime/transport/nccl_transport.h"

namespace bitserve::rpc {
namespace {

using Clock = std::chrono::steady_clock;
using Stream = ::grpc::ServerReaderWriter<wire::CoordinatorMessage, wire::WorkerMessage>;

int64_t Millis(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

// One attached worker. The Attach handler owns the stream; other threads write to it under
// write_mu while `closed` is false (the handler sets it before returning). The rest is guarded by
// the hub's mu_.
struct WorkerHub::Link {
  std::string worker_id;
  std::string transport_address;
  std::string device_kind, hostname, pci_bus_id;  // from Register.device
  ::grpc::ServerContext* context = nullptr;
  Stream* stream = nullptr;
  std::mutex write_mu;
  bool closed = false;  // under write_mu

  int stage = 0;
  bool assigned = false;  // the Assignment below is decided (and then sent)
  wire::CoordinatorMessage assignment;
  Clock::time_point last_heard;
  bool ready = false;
  int num_kv_blocks = 0, max_batch_tokens = 0;
  int64_t max_model_len = 0;
  KvDtype kv_dtype = KvDtype::kBf16;
  std::string device;
  bool lost = false;
  bool lost_by_peer = false;  // lost only because another stage of its pipeline was
  std::string lost_reason;
  std::map<uint64_t, wire::StepResult> results;  // by step id, until FinishStep takes them

  std::string Name(int num_stages) const {
    return num_stages == 1 ? worker_id : absl::StrCat(worker_id, " (stage ", stage, ")");
  }
  // False when the stream is closed or broken.
  bool Write(const wire::CoordinatorMessage& message) {
    std::lock_guard<std::mutex> lock(write_mu);
    return !closed && stream->Write(message);
  }
};

// Steps go to every stage of the pipeline; the limits are the first pipeline's.
class WorkerHub::RemoteEngine final : public Engine {
 public:
  explicit RemoteEngine(WorkerHub* hub) : hub_(hub) {}

  const ModelConfig& config() const override { return hub_->config_; }
  int block_size() const override { return hub_->block_size_; }
  int num_kv_blocks() const override { return hub_->num_kv_blocks_; }
  int64_t max_model_len() const override { return hub_->max_model_len_; }
  int max_batch_tokens() const override { return hub_->max_batch_tokens_; }
  std::string device_name() const override { return hub_->device_name_; }
  KvDtype kv_dtype() const override { return hub_->kv_dtype_; }
  absl::Status Health() const override { return hub_->Health(); }

  absl::Status Forward(std::span<const BatchEntry>, std::vector<float>*) override {
    return absl::UnimplementedError(
        "logits are not sent over the worker protocol; only sampled tokens come back (Step)");
  }

  int max_steps_in_flight() const override { return hub_->options_.num_stages; }

  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override {
    {
      std::lock_guard<std::mutex> lock(hub_->mu_);
      if (!in_flight_.empty()) return absl::FailedPreconditionError("Step with pipelined steps in flight");
    }
    RETURN_IF_ERROR(StartStep(entries, samples));
    return FinishStep(results);
  }

  absl::Status StartStep(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples) override {
    WorkerHub& h = *hub_;
    const int num_stages = h.options_.num_stages;
    InFlight step;
    wire::CoordinatorMessage message;
    {
      std::lock_guard<std::mutex> lock(h.mu_);
      if (h.shutting_down_) return absl::UnavailableError("the coordinator is shutting down");
      if (static_cast<int>(in_flight_.size()) >= num_stages) {
        return absl::FailedPreconditionError(
            absl::StrCat(in_flight_.size(), " steps in flight already, the most a ", num_stages,
                         "-stage pipeline takes"));
      }
      if (absl::Status health = h.HealthLocked(); !health.ok()) {
        seen_epoch_ = 0;
        return health;
      }
      if (seen_epoch_ != 0 && seen_epoch_ != h.epoch_) {
        // The sequences the caller still runs had their KV cache on the lost pipeline.
        seen_epoch_ = 0;
        return absl::UnavailableError(absl::StrCat(
            h.last_loss_, "; the workers were replaced, and the KV cache of the running sequences is gone"));
      }
      seen_epoch_ = h.epoch_;
      step.id = h.next_step_++;
      step.links = h.pipeline_;
      step.samples = samples.size();
      in_flight_.push_back(step);
      if (h.options_.metrics) h.options_.metrics->SetStepsInFlight(static_cast<int>(in_flight_.size()));
      message.mutable_step()->set_step_id(step.id);
    }
    EncodeStep(entries, samples, message.mutable_step());
    for (auto& link : step.links) {
      if (!link->Write(message)) {
        std::lock_guard<std::mutex> lock(h.mu_);
        h.MarkLost(*link, "the step could not be sent (stream closed)");
      }
    }
    return absl::OkStatus();
  }

  absl::Status FinishStep(std::vector<SampleResult>* results) override {
    WorkerHub& h = *hub_;
    const int num_stages = h.options_.num_stages;
    std::unique_lock<std::mutex> lock(h.mu_);
    if (in_flight_.empty()) return absl::FailedPreconditionError("no step in flight");
    const InFlight step = in_flight_.front();
    in_flight_.pop_front();
    if (h.options_.metrics) h.options_.metrics->SetStepsInFlight(static_cast<int>(in_flight_.size()));
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
             std::all_of(step.links.begin(), step.links.end(), [&](const auto& l) { return answered(*l); });
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
      return absl::UnavailableError(absl::StrCat("worker ", gone->Name(num_stages),
                                                 " lost during a step: ", gone->lost_reason));
    }
    lock.unlock();
    if (h.options_.metrics) {
      for (size_t i = 0; i < answers.size(); ++i) {
        h.options_.metrics->StageStepDone(static_cast<int>(i), answers[i].compute_seconds(),
                                          answers[i].transfer_seconds());
      }
    }
    for (size_t i = 0; i < step.links.size(); ++i) {
      if (absl::Status s = StatusFromProto(answers[i].status()); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("worker ", step.links[i]->Name(num_stages), ": ", s.message()));
      }
    }
    ASSIGN_OR_RETURN(*results, DecodeResults(answers.back(), step.samples));
    return absl::OkStatus();
  }

 private:
  struct InFlight {
    uint64_t id = 0;
    std::vector<std::shared_ptr<Link>> links;
    size_t samples = 0;
  };
  WorkerHub* hub_;
  // Under hub mu_: the pipeline epoch the caller's KV state lives on, and the started steps.
  uint64_t seen_epoch_ = 0;
  std::deque<InFlight> in_flight_;
};

absl::StatusOr<PipelineTransport> ParsePipelineTransport(absl::string_view name) {
  if (name == "auto") return PipelineTransport::kAuto;
  if (name == "nccl") return PipelineTransport::kNccl;
  if (name == "tcp") return PipelineTransport::kTcp;
  return absl::InvalidArgumentError(absl::StrCat("pipeline transport must be auto, nccl or tcp, got \"", name, "\""));
}

absl::StatusOr<std::unique_ptr<WorkerHub>> WorkerHub::Create(const WorkerHubOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  if (options.heartbeat_interval.count() <= 0 ||
      options.heartbeat_timeout <= options.heartbeat_interval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heartbeat timeout (", options.heartbeat_timeout.count(),
        " ms) must exceed the heartbeat interval (", options.heartbeat_interval.count(), " ms) > 0"));
  }
  ASSIGN_OR_RETURN(std::vector<PipelineStage> stages, BalanceStages(config, options.num_stages));
  if (options.num_stages > 1 && options.pp_transport == PipelineTransport::kNccl) {
    if (absl::Status s = NewNcclUniqueId().status(); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--pp-transport nccl: ", s.message()));
    }
  }
  return std::unique_ptr<WorkerHub>(new WorkerHub(options, std::move(config), std::move(stages)));
}

WorkerHub::WorkerHub(const WorkerHubOptions& options, ModelConfig config, std::vector<PipelineStage> stages)
    : options_(options), config_(std::move(config)), stages_(std::move(stages)) {
  monitor_ = std::thread([this] { Monitor(); });
}

WorkerHub::~WorkerHub() { Shutdown(); }

bool WorkerHub::Whole() const {
  return static_cast<int>(pipeline_.size()) == options_.num_stages &&
         std::all_of(pipeline_.begin(), pipeline_.end(), [](const auto& l) { return l->ready && !l->lost; });
}

int WorkerHub::ReadyStages() const {
  return static_cast<int>(std::count_if(pipeline_.begin(), pipeline_.end(),
                                        [](const auto& l) { return l->ready && !l->lost; }));
}

void WorkerHub::MarkLost(Link& link, const std::string& reason) {
  if (link.lost) return;
  link.lost = true;
  link.lost_reason = reason;
  changed_.notify_all();
  auto it = std::find_if(pipeline_.begin(), pipeline_.end(), [&](const auto& l) { return l.get() == &link; });
  if (it == pipeline_.end()) return;
  const int n = options_.num_stages;
  if (!link.assigned) {
    // The pipeline was still forming: the others keep waiting, in registration order.
    pipeline_.erase(it);
    for (size_t i = 0; i < pipeline_.size(); ++i) pipeline_[i]->stage = static_cast<int>(i);
    return;
  }
  if (shutting_down_) {
    if (link.ready) std::cerr << "bitserve serve: worker " << link.Name(n) << " left" << std::endl;
  } else {
    last_loss_ = absl::StrCat("worker ", link.Name(n), " lost: ", reason);
    std::cerr << "bitserve serve: " << last_loss_ << std::endl;
  }
  // The pipeline breaks up: the other stages' KV cache and transport are useless without this
  // one, so they register again and a new pipeline forms around the replacement.
  for (auto& other : pipeline_) {
    if (other.get() == &link || other->lost) continue;
    other->lost = true;
    other->lost_by_peer = true;
    other->lost_reason = absl::StrCat("the pipeline lost worker ", link.Name(n));
    if (!shutting_down_) rejoin_.push_back(other);
  }
  pipeline_.clear();
}

void WorkerHub::Monitor() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    changed_.wait_for(lock, options_.heartbeat_interval / 2);
    for (const auto& link : std::vector<std::shared_ptr<Link>>(pipeline_)) {
      if (link->assigned && !link->lost && Clock::now() - link->last_heard > options_.heartbeat_timeout) {
        const std::string reason = absl::StrCat("no heartbeat for ", Millis(Clock::now() - link->last_heard), " ms");
        MarkLost(*link, reason);
        hung_workers_.push_back({link->worker_id, reason});
        link->context->TryCancel();  // ends the handler's Read
      }
    }
    // Written outside the lock: a stream write may wait for the network.
    std::vector<std::shared_ptr<Link>> rejoin;
    rejoin.swap(rejoin_);
    if (rejoin.empty()) continue;
    lock.unlock();
    wire::CoordinatorMessage message;
    message.mutable_shutdown()->set_reason("a pipeline stage was lost; register again");
    message.mutable_shutdown()->set_rejoin(true);
    for (auto& link : rejoin) link->Write(message);
    lock.lock();
  }
}

bool WorkerHub::NcclCanJoin() const {
  std::set<std::pair<std::string, std::string>> gpus;
  for (const auto& link : pipeline_) {
    if (link->device_kind != "cuda" || link->pci_bus_id.empty() ||
        !gpus.insert({link->hostname, link->pci_bus_id}).second) {
      return false;
    }
  }
  return true;
}

void WorkerHub::AssignAll() {
  const int n = options_.num_stages;
  // One communicator per pipeline formed: a fresh unique id (its bootstrap root runs here).
  std::string nccl_id;
  if (n > 1 && (options_.pp_transport == PipelineTransport::kNccl ||
                (options_.pp_transport == PipelineTransport::kAuto && NcclCanJoin()))) {
    if (auto id = NewNcclUniqueId(); id.ok()) {
      nccl_id = *std::move(id);
    } else {
      std::cerr << "bitserve serve: no NCCL for this pipeline (" << id.status().message() << "); using TCP"
                << std::endl;
    }
  }
  pipeline_transport_ = nccl_id.empty() ? "tcp" : "nccl";
  if (n > 1) {
    std::cerr << "bitserve serve: pipeline of " << n << " stages over " << pipeline_transport_ << " ("
              << TransferDtypeName(options_.pp_transfer) << " hidden states)" << std::endl;
  }
  for (int i = 0; i < n; ++i) {
    Link& link = *pipeline_[i];
    const PipelineStage& st = stages_[i];
    wire::Assignment& a = *link.assignment.mutable_assignment();
    a.set_assignment_id(next_assignment_++);
    a.set_rank(i);
    a.set_world_size(n);
    a.set_model_dir(options_.model_dir.string());
    wire::ModelShard& shard = *a.mutable_shard();
    shard.set_pipeline_stage(i);
    shard.set_num_pipeline_stages(n);
    shard.set_layer_begin(st.layer_begin);
    shard.set_layer_end(st.end(config_.num_hidden_layers));
    shard.set_has_embedding(st.first());
    shard.set_has_lm_head(st.last());
    shard.set_expert_group_size(1);
    for (int e = 0; e < config_.num_experts; ++e) shard.add_expert_ids(e);
    wire::KvCacheSpec& kv = *a.mutable_kv_cache();
    kv.set_block_size(options_.engine.block_size);
    if (options_.engine.kv_dtype) kv.set_dtype(KvDtypeToProto(*options_.engine.kv_dtype));
    kv.set_num_blocks(num_kv_blocks_ > 0 ? num_kv_blocks_ : options_.engine.num_kv_blocks);
    // Stages that share a GPU split its memory.
    int sharing = 0;
    for (const auto& other : pipeline_) {
      sharing += other->device_kind == "cuda" && !other->pci_bus_id.empty() &&
                 other->hostname == link.hostname && other->pci_bus_id == link.pci_bus_id;
    }
    kv.set_memory_fraction(options_.engine.kv_memory_fraction / std::max(1, sharing));
    if (n > 1) {
      wire::TransportSpec& t = *a.mutable_transport();
      t.set_activation_dtype(TransferDtypeToProto(options_.pp_transfer));
      if (!nccl_id.empty()) {
        t.mutable_nccl()->set_unique_id(nccl_id);
        t.mutable_nccl()->set_rank(i);
        t.mutable_nccl()->set_world_size(n);
      } else {
        t.mutable_cpu()->set_rank(i);
        for (const auto& peer : pipeline_) t.mutable_cpu()->add_peer_addresses(peer->transport_address);
      }
    }
    a.set_max_batch_tokens(options_.engine.max_batch_tokens);
    a.set_max_model_len(static_cast<int32_t>(options_.engine.max_model_len));
    a.set_heartbeat_interval_ms(static_cast<int32_t>(options_.heartbeat_interval.count()));
    a.set_heartbeat_timeout_ms(static_cast<int32_t>(options_.heartbeat_timeout.count()));
    link.assigned = true;
    link.last_heard = Clock::now();
  }
  changed_.notify_all();
}

absl::Status WorkerHub::AcceptReady(Link& link, const wire::Ready& r) {
  if (r.vocab_size() != config_.vocab_size || r.num_hidden_layers() != config_.num_hidden_layers ||
      r.hidden_size() != config_.hidden_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "it loaded a model with vocab ", r.vocab_size(), ", ", r.num_hidden_layers(), " layers, hidden ",
        r.hidden_size(), "; the coordinator's has ", config_.vocab_size, ", ", config_.num_hidden_layers,
        ", ", config_.hidden_size));
  }
  absl::StatusOr<std::optional<KvDtype>> kv_dtype = KvDtypeFromProto(r.kv_dtype(), "Ready.kv_dtype");
  if (!kv_dtype.ok() || !kv_dtype->has_value() ||
      (options_.engine.kv_dtype && **kv_dtype != *options_.engine.kv_dtype)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "it keeps its KV cache as ", kv_dtype.ok() && kv_dtype->has_value() ? KvDtypeName(**kv_dtype) : "an unknown type",
        options_.engine.kv_dtype ? absl::StrCat("; expected ", KvDtypeName(*options_.engine.kv_dtype)) : std::string()));
  }
  link.kv_dtype = **kv_dtype;
  if (r.num_kv_blocks() <= 0 || r.block_size() != options_.engine.block_size) {
    return absl::FailedPreconditionError(absl::StrCat("it allocated ", r.num_kv_blocks(), " KV blocks of ",
                                                      r.block_size(), " tokens; expected blocks of ",
                                                      options_.engine.block_size));
  }
  if (pipelines_ready_ > 0 && (r.num_kv_blocks() < num_kv_blocks_ || r.max_model_len() < max_model_len_ ||
                               r.max_batch_tokens() < max_batch_tokens_)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a replacement must hold what the first workers held: ", r.num_kv_blocks(), " KV blocks, max_model_len ",
        r.max_model_len(), ", max_batch_tokens ", r.max_batch_tokens(), " vs ", num_kv_blocks_, ", ",
        max_model_len_, ", ", max_batch_tokens_));
  }
  link.ready = true;
  link.num_kv_blocks = r.num_kv_blocks();
  link.max_model_len = r.max_model_len();
  link.max_batch_tokens = r.max_batch_tokens();
  link.device = r.device_name();
  const int n = options_.num_stages;
  std::cerr << "bitserve serve: worker " << link.Name(n) << " ready on " << r.device_name() << ": "
            << r.num_kv_blocks() << " KV blocks, loaded in " << r.load_seconds() << " s" << std::endl;
  if (!Whole()) return absl::OkStatus();
  if (pipelines_ready_ == 0) {
    // The scheduler's limits: what every stage can hold.
    num_kv_blocks_ = pipeline_[0]->num_kv_blocks;
    max_model_len_ = pipeline_[0]->max_model_len;
    max_batch_tokens_ = pipeline_[0]->max_batch_tokens;
    for (const auto& l : pipeline_) {
      num_kv_blocks_ = std::min(num_kv_blocks_, l->num_kv_blocks);
      max_model_len_ = std::min(max_model_len_, l->max_model_len);
      max_batch_tokens_ = std::min(max_batch_tokens_, l->max_batch_tokens);
    }
    block_size_ = r.block_size();
    kv_dtype_ = pipeline_[0]->kv_dtype;
    device_name_ = n == 1 ? absl::StrCat("worker ", link.worker_id, " ", link.device)
                          : absl::StrCat(n, "-stage pipeline of workers over ", pipeline_transport_, " (",
                                         pipeline_[0]->device, ")");
  }
  ++epoch_;
  ++pipelines_ready_;
  if (n > 1) std::cerr << "bitserve serve: pipeline of " << n << " stages ready" << std::endl;
  changed_.notify_all();
  return absl::OkStatus();
}

::grpc::Status WorkerHub::Attach(::grpc::ServerContext* context, Stream* stream) {
  wire::WorkerMessage message;
  if (!stream->Read(&message) || !message.has_register_()) {
    return ::grpc::Status(::grpc::StatusCode::INVALID_ARGUMENT, "the first message must be Register");
  }
  const wire::Register& reg = message.register_();
  const int n = options_.num_stages;
  auto reject = [&](::grpc::StatusCode code, const std::string& why) {
    wire::CoordinatorMessage out;
    out.mutable_reject()->mutable_status()->set_code(static_cast<int>(code));
    out.mutable_reject()->mutable_status()->set_message(why);
    stream->Write(out);
    std::cerr << "bitserve serve: refused worker " << reg.worker_id() << ": " << why << std::endl;
    return ::grpc::Status(code, why);
  };
  if (reg.protocol_version() != kWorkerProtocolVersion) {
    return reject(::grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("protocol_version ", reg.protocol_version(), ", expected ",
                               kWorkerProtocolVersion, " (build the worker from the same source)"));
  }
  if (n > 1 && reg.transport_address().empty()) {
    return reject(::grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("a ", n, "-stage pipeline needs the worker's transport_address"));
  }
  auto link = std::make_shared<Link>();
  link->worker_id = reg.worker_id().empty() ? context->peer() : reg.worker_id();
  link->transport_address = reg.transport_address();
  link->device_kind = reg.device().kind();
  link->hostname = reg.device().hostname();
  link->pci_bus_id = reg.device().pci_bus_id();
  if (n > 1 && options_.pp_transport == PipelineTransport::kNccl && link->device_kind != "cuda") {
    return reject(::grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("this coordinator's pipeline runs over NCCL (--pp-transport nccl); a ",
                               link->device_kind, " worker cannot join it"));
  }
  link->context = context;
  link->stream = stream;
  link->last_heard = Clock::now();
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (shutting_down_) return reject(::grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    if (static_cast<int>(pipeline_.size()) == n) {
      return reject(::grpc::StatusCode::ALREADY_EXISTS,
                    n == 1 ? absl::StrCat("worker ", pipeline_[0]->worker_id,
                                          " holds the model; this coordinator runs one worker")
                           : absl::StrCat("the pipeline has its ", n, " workers"));
    }
    link->stage = static_cast<int>(pipeline_.size());
    pipeline_.push_back(link);
    std::cerr << "bitserve serve: worker " << link->worker_id << " (" << reg.device().kind() << ", "
              << context->peer() << ") registered"
              << (n > 1 ? absl::StrCat(" for stage ", link->stage, " of ", n) : std::string()) << std::endl;
    if (static_cast<int>(pipeline_.size()) == n) AssignAll();
    // Wait for the rest of the pipeline; a worker that leaves meanwhile frees its place.
    while (!link->assigned && !link->lost && !shutting_down_) {
      changed_.wait_for(lock, std::chrono::milliseconds(100));
      if (context->IsCancelled()) MarkLost(*link, "it left before the pipeline formed");
    }
    if (!link->assigned) {
      return ::grpc::Status(::grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    }
  }
  link->Write(link->assignment);

  ::grpc::Status end = ::grpc::Status::OK;
  while (stream->Read(&message)) {
    std::lock_guard<std::mutex> lock(mu_);
    if (link->lost) break;
    link->last_heard = Clock::now();
    if (message.has_step_result()) {
      link->results[message.step_result().step_id()] = message.step_result();
      changed_.notify_all();
    } else if (message.has_failure()) {
      MarkLost(*link, absl::StrCat("it failed: ", message.failure().status().message()));
      break;
    } else if (message.has_ready() && !link->ready) {
      if (absl::Status s = AcceptReady(*link, message.ready()); !s.ok()) {
        std::cerr << "bitserve serve: refused worker " << link->worker_id << ": " << s.message() << std::endl;
        MarkLost(*link, std::string(s.message()));
        end = ::grpc::Status(::grpc::StatusCode::FAILED_PRECONDITION, std::string(s.message()));
        break;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    MarkLost(*link, context->IsCancelled() ? "its stream was cancelled" : "its stream closed");
  }
  {
    std::lock_guard<std::mutex> lock(link->write_mu);
    link->closed = true;
  }
  return end;
}

absl::Status WorkerHub::WaitForWorker(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!changed_.wait_until(lock, deadline, [&] { return pipelines_ready_ > 0 || shutting_down_; }) ||
      pipelines_ready_ == 0) {
    return absl::DeadlineExceededError("no worker became ready");
  }
  return absl::OkStatus();
}

std::unique_ptr<Engine> WorkerHub::MakeEngine() { return std::make_unique<RemoteEngine>(this); }

absl::Status WorkerHub::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return HealthLocked();
}

absl::Status WorkerHub::HealthLocked() const {
  if (Whole()) return absl::OkStatus();
  const std::string what = options_.num_stages == 1
                               ? std::string(pipelines_ready_ == 0 ? "no worker attached yet" : "no worker attached")
                               : absl::StrCat("the pipeline has ", ReadyStages(), " of ",
                                              options_.num_stages, " stages ready");
  if (!last_loss_.empty()) return absl::UnavailableError(absl::StrCat(last_loss_, "; ", what));
  return absl::UnavailableError(what);
}

std::vector<WorkerHub::HungWorker> WorkerHub::TakeHungWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(hung_workers_, {});
}

int WorkerHub::pipelines_ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pipelines_ready_;
}

void WorkerHub::Shutdown() {
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    links = pipeline_;
    changed_.notify_all();
  }
  wire::CoordinatorMessage bye;
  bye.mutable_shutdown()->set_reason("the coordinator is shutting down");
  for (auto& link : links) link->Write(bye);
  if (monitor_.joinable()) monitor_.join();
}

}  // namespace bitserve::rpc
