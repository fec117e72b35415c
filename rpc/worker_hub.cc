#include "rpc/worker_hub.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "rpc/worker_protocol.h"

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
  std::string device;
  ::grpc::ServerContext* context = nullptr;
  Stream* stream = nullptr;
  std::mutex write_mu;
  bool closed = false;  // under write_mu

  Clock::time_point last_heard;
  bool ready = false;
  bool lost = false;
  std::string lost_reason;
  uint64_t epoch = 0;
  uint64_t pending_step = 0;
  bool has_result = false;
  wire::StepResult result;

  // False when the stream is closed or broken.
  bool Write(const wire::CoordinatorMessage& message) {
    std::lock_guard<std::mutex> lock(write_mu);
    return !closed && stream->Write(message);
  }
};

// Steps go to the attached worker; the limits are the first worker's.
class WorkerHub::RemoteEngine final : public Engine {
 public:
  explicit RemoteEngine(WorkerHub* hub) : hub_(hub) {}

  const ModelConfig& config() const override { return hub_->config_; }
  int block_size() const override { return hub_->block_size_; }
  int num_kv_blocks() const override { return hub_->num_kv_blocks_; }
  int64_t max_model_len() const override { return hub_->max_model_len_; }
  int max_batch_tokens() const override { return hub_->max_batch_tokens_; }
  std::string device_name() const override { return hub_->device_name_; }
  absl::Status Health() const override { return hub_->Health(); }

  absl::Status Forward(std::span<const BatchEntry>, std::vector<float>*) override {
    return absl::UnimplementedError(
        "logits are not sent over the worker protocol; only sampled tokens come back (Step)");
  }

  absl::Status Step(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                    std::vector<SampleResult>* results) override {
    WorkerHub& h = *hub_;
    std::shared_ptr<Link> link;
    wire::CoordinatorMessage message;
    {
      std::lock_guard<std::mutex> lock(h.mu_);
      if (h.shutting_down_) return absl::UnavailableError("the coordinator is shutting down");
      if (!h.active_ || !h.active_->ready) {
        seen_epoch_ = 0;
        return absl::UnavailableError(h.last_loss_.empty()
                                          ? std::string("no worker attached")
                                          : absl::StrCat(h.last_loss_, "; no worker attached"));
      }
      if (seen_epoch_ != 0 && seen_epoch_ != h.active_->epoch) {
        // The sequences the caller still runs had their KV cache on the lost worker.
        seen_epoch_ = 0;
        return absl::UnavailableError(
            absl::StrCat(h.last_loss_, "; worker ", h.active_->worker_id,
                         " replaced it, and the KV cache of the running sequences is gone"));
      }
      seen_epoch_ = h.active_->epoch;
      link = h.active_;
      link->pending_step = h.next_step_++;
      link->has_result = false;
      message.mutable_step()->set_step_id(link->pending_step);
    }
    EncodeStep(entries, samples, message.mutable_step());
    if (!link->Write(message)) {
      std::lock_guard<std::mutex> lock(h.mu_);
      h.MarkLost(*link, "the step could not be sent (stream closed)");
    }
    std::unique_lock<std::mutex> lock(h.mu_);
    h.changed_.wait(lock, [&] { return link->has_result || link->lost || h.shutting_down_; });
    if (!link->has_result) {
      seen_epoch_ = 0;
      if (h.shutting_down_) return absl::UnavailableError("the coordinator is shutting down");
      return absl::UnavailableError(
          absl::StrCat("worker ", link->worker_id, " lost during a step: ", link->lost_reason));
    }
    const wire::StepResult result = std::move(link->result);
    link->has_result = false;
    lock.unlock();
    if (absl::Status s = StatusFromProto(result.status()); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("worker ", link->worker_id, ": ", s.message()));
    }
    ASSIGN_OR_RETURN(*results, DecodeResults(result, samples.size()));
    return absl::OkStatus();
  }

 private:
  WorkerHub* hub_;
  uint64_t seen_epoch_ = 0;  // the worker epoch the caller's KV state lives on; under hub mu_
};

absl::StatusOr<std::unique_ptr<WorkerHub>> WorkerHub::Create(const WorkerHubOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  if (options.heartbeat_interval.count() <= 0 ||
      options.heartbeat_timeout <= options.heartbeat_interval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heartbeat timeout (", options.heartbeat_timeout.count(),
        " ms) must exceed the heartbeat interval (", options.heartbeat_interval.count(), " ms) > 0"));
  }
  return std::unique_ptr<WorkerHub>(new WorkerHub(options, std::move(config)));
}

WorkerHub::WorkerHub(const WorkerHubOptions& options, ModelConfig config)
    : options_(options), config_(std::move(config)) {
  monitor_ = std::thread([this] { Monitor(); });
}

WorkerHub::~WorkerHub() { Shutdown(); }

void WorkerHub::MarkLost(Link& link, const std::string& reason) {
  if (link.lost) return;
  link.lost = true;
  link.lost_reason = reason;
  if (active_.get() == &link) {
    active_.reset();
    if (link.ready && shutting_down_) {
      std::cerr << "bitserve serve: worker " << link.worker_id << " left" << std::endl;
    } else if (link.ready) {
      last_loss_ = absl::StrCat("worker ", link.worker_id, " lost: ", reason);
      std::cerr << "bitserve serve: " << last_loss_ << std::endl;
    }
  }
  changed_.notify_all();
}

void WorkerHub::Monitor() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    changed_.wait_for(lock, options_.heartbeat_interval / 2);
    if (active_ && !active_->lost && Clock::now() - active_->last_heard > options_.heartbeat_timeout) {
      std::shared_ptr<Link> link = active_;
      MarkLost(*link, absl::StrCat("no heartbeat for ", Millis(Clock::now() - link->last_heard), " ms"));
      link->context->TryCancel();  // ends the handler's Read
    }
  }
}

::grpc::Status WorkerHub::Attach(::grpc::ServerContext* context, Stream* stream) {
  wire::WorkerMessage message;
  if (!stream->Read(&message) || !message.has_register_()) {
    return ::grpc::Status(::grpc::StatusCode::INVALID_ARGUMENT, "the first message must be Register");
  }
  const wire::Register& reg = message.register_();
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
  auto link = std::make_shared<Link>();
  link->worker_id = reg.worker_id().empty() ? context->peer() : reg.worker_id();
  link->context = context;
  link->stream = stream;
  link->last_heard = Clock::now();
  wire::CoordinatorMessage out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return reject(::grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    if (active_) {
      return reject(::grpc::StatusCode::ALREADY_EXISTS,
                    absl::StrCat("worker ", active_->worker_id,
                                 " holds the model; this coordinator runs one worker (world_size 1)"));
    }
    active_ = link;
    wire::Assignment& a = *out.mutable_assignment();
    a.set_assignment_id(next_assignment_++);
    a.set_rank(0);
    a.set_world_size(1);
    a.set_model_dir(options_.model_dir.string());
    wire::ModelShard& shard = *a.mutable_shard();
    shard.set_pipeline_stage(0);
    shard.set_num_pipeline_stages(1);
    shard.set_layer_begin(0);
    shard.set_layer_end(config_.num_hidden_layers);
    shard.set_has_embedding(true);
    shard.set_has_lm_head(true);
    shard.set_expert_group_size(1);
    for (int e = 0; e < config_.num_experts; ++e) shard.add_expert_ids(e);
    wire::KvCacheSpec& kv = *a.mutable_kv_cache();
    kv.set_block_size(options_.engine.block_size);
    kv.set_num_blocks(num_kv_blocks_ > 0 ? num_kv_blocks_ : options_.engine.num_kv_blocks);
    kv.set_memory_fraction(options_.engine.kv_memory_fraction);
    a.set_max_batch_tokens(options_.engine.max_batch_tokens);
    a.set_max_model_len(static_cast<int32_t>(options_.engine.max_model_len));
    a.set_heartbeat_interval_ms(static_cast<int32_t>(options_.heartbeat_interval.count()));
    a.set_heartbeat_timeout_ms(static_cast<int32_t>(options_.heartbeat_timeout.count()));
  }
  std::cerr << "bitserve serve: worker " << link->worker_id << " (" << reg.device().kind() << " "
            << reg.device().name() << ", " << context->peer() << ") registered, loading" << std::endl;
  link->Write(out);

  ::grpc::Status end = ::grpc::Status::OK;
  while (stream->Read(&message)) {
    std::lock_guard<std::mutex> lock(mu_);
    if (link->lost) break;
    link->last_heard = Clock::now();
    if (message.has_step_result()) {
      if (message.step_result().step_id() == link->pending_step && !link->has_result) {
        link->result = message.step_result();
        link->has_result = true;
        changed_.notify_all();
      }
    } else if (message.has_failure()) {
      MarkLost(*link, absl::StrCat("it failed: ", message.failure().status().message()));
      break;
    } else if (message.has_ready() && !link->ready) {
      const wire::Ready& r = message.ready();
      std::string mismatch;
      if (r.vocab_size() != config_.vocab_size || r.num_hidden_layers() != config_.num_hidden_layers ||
          r.hidden_size() != config_.hidden_size) {
        mismatch = absl::StrCat("it loaded a model with vocab ", r.vocab_size(), ", ", r.num_hidden_layers(),
                                " layers, hidden ", r.hidden_size(), "; the coordinator's has ",
                                config_.vocab_size, ", ", config_.num_hidden_layers, ", ",
                                config_.hidden_size);
      } else if (r.num_kv_blocks() <= 0 || r.block_size() != options_.engine.block_size) {
        mismatch = absl::StrCat("it allocated ", r.num_kv_blocks(), " KV blocks of ", r.block_size(),
                                " tokens; expected blocks of ", options_.engine.block_size);
      } else if (workers_joined_ > 0 &&
                 (r.num_kv_blocks() != num_kv_blocks_ || r.max_model_len() != max_model_len_ ||
                  r.max_batch_tokens() != max_batch_tokens_)) {
        mismatch = absl::StrCat("a replacement must match the first worker: ", r.num_kv_blocks(),
                                " KV blocks, max_model_len ", r.max_model_len(), ", max_batch_tokens ",
                                r.max_batch_tokens(), " vs ", num_kv_blocks_, ", ", max_model_len_, ", ",
                                max_batch_tokens_);
      }
      if (!mismatch.empty()) {
        MarkLost(*link, mismatch);
        end = ::grpc::Status(::grpc::StatusCode::FAILED_PRECONDITION, mismatch);
        std::cerr << "bitserve serve: refused worker " << link->worker_id << ": " << mismatch << std::endl;
        break;
      }
      if (workers_joined_ == 0) {
        num_kv_blocks_ = r.num_kv_blocks();
        block_size_ = r.block_size();
        max_model_len_ = r.max_model_len();
        max_batch_tokens_ = r.max_batch_tokens();
        device_name_ = absl::StrCat("worker ", link->worker_id, " ", r.device_name());
      }
      link->device = r.device_name();
      link->ready = true;
      link->epoch = ++epoch_;
      ++workers_joined_;
      std::cerr << "bitserve serve: worker " << link->worker_id << " ready on " << r.device_name()
                << ": " << r.num_kv_blocks() << " KV blocks, loaded in " << r.load_seconds() << " s"
                << std::endl;
      changed_.notify_all();
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
  if (!changed_.wait_until(lock, deadline, [&] { return workers_joined_ > 0 || shutting_down_; }) ||
      workers_joined_ == 0) {
    return absl::DeadlineExceededError("no worker became ready");
  }
  return absl::OkStatus();
}

std::unique_ptr<Engine> WorkerHub::MakeEngine() { return std::make_unique<RemoteEngine>(this); }

absl::Status WorkerHub::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_ && active_->ready && !active_->lost) return absl::OkStatus();
  if (!last_loss_.empty()) return absl::UnavailableError(absl::StrCat(last_loss_, "; no worker attached"));
  return absl::UnavailableError("no worker attached yet");
}

int WorkerHub::workers_joined() const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_joined_;
}

void WorkerHub::Shutdown() {
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    link = active_;
    changed_.notify_all();
  }
  if (link) {
    wire::CoordinatorMessage bye;
    bye.mutable_shutdown()->set_reason("the coordinator is shutting down");
    link->Write(bye);
  }
  if (monitor_.joinable()) monitor_.join();
}

}  // namespace bitserve::rpc
