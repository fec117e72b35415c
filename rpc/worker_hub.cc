#include "rpc/worker_hub.h"

#include <algorithm>
#include <deque>
#include <iostream>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "rpc/api_keys.h"
#include "rpc/worker.h"
#include "rpc/worker_link.h"
#include "rpc/worker_protocol.h"
#include "runtime/transport/nccl_transport.h"
#include "scheduler/expert_placement.h"

namespace bitserve::rpc {
namespace {

int64_t Millis(WorkerLinkClock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

// What a worker whose pipeline lost another worker hears (it registers again).
wire::CoordinatorMessage RejoinMessage() {
  wire::CoordinatorMessage message;
  message.mutable_shutdown()->set_reason("a pipeline stage was lost; register again");
  message.mutable_shutdown()->set_rejoin(true);
  return message;
}

}  // namespace

absl::StatusOr<PipelineTransport> ParsePipelineTransport(absl::string_view name) {
  if (name == "auto") return PipelineTransport::kAuto;
  if (name == "nccl") return PipelineTransport::kNccl;
  if (name == "tcp") return PipelineTransport::kTcp;
  return absl::InvalidArgumentError(
      absl::StrCat("pipeline transport must be auto, nccl or tcp, got \"", name, "\""));
}

absl::StatusOr<std::unique_ptr<WorkerHub>> WorkerHub::Create(const WorkerHubOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  if (options.heartbeat_interval.count() <= 0 ||
      options.heartbeat_timeout <= options.heartbeat_interval) {
    return absl::InvalidArgumentError(absl::StrCat("heartbeat timeout (",
                                                   options.heartbeat_timeout.count(),
                                                   " ms) must exceed the heartbeat interval (",
                                                   options.heartbeat_interval.count(), " ms) > 0"));
  }
  absl::StatusOr<std::vector<PipelineStage>> stages =
      options.pipeline_split.empty()
          ? BalanceStages(config, options.num_stages)
          : StagesFromSplit(config, options.num_stages, options.pipeline_split);
  if (!stages.ok()) {
    return absl::Status(stages.status().code(), absl::StrCat(stages.status().message(), " (",
                                                             options.model_dir.string(), ")"));
  }
  std::vector<int32_t> expert_owner;
  if (options.expert_parallel != 1) {
    absl::StatusOr<scheduler::ExpertPlacement> placement =
        scheduler::ContiguousPlacement(config.num_experts, options.expert_parallel);
    if (!placement.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--expert-parallel ", options.expert_parallel,
                                                     ": ", placement.status().message(), " (",
                                                     options.model_dir.string(), ")"));
    }
    expert_owner = placement->owner;
  }
  if ((options.num_stages > 1 || options.expert_parallel > 1) &&
      options.pp_transport == PipelineTransport::kNccl) {
    if (absl::Status s = NewNcclUniqueId().status(); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--pp-transport nccl: ", s.message()));
    }
  }
  return std::unique_ptr<WorkerHub>(
      new WorkerHub(options, std::move(config), *std::move(stages), std::move(expert_owner)));
}

void WorkerHub::ConfigureServer(::grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  // gRPC's default refuses pings more often than every 5 minutes while the server sends nothing
  // (an idle coordinator), ending the connection after a few: accept the workers' keepalive.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(kWorkerKeepaliveTime.count() / 2));
}

WorkerHub::WorkerHub(const WorkerHubOptions& options, ModelConfig config,
                     std::vector<PipelineStage> stages, std::vector<int32_t> expert_owner)
    : options_(options),
      config_(std::move(config)),
      stages_(std::move(stages)),
      expert_owner_(std::move(expert_owner)) {
  monitor_ = std::thread([this] { Monitor(); });
}

WorkerHub::~WorkerHub() { Shutdown(); }

bool WorkerHub::Whole() const {
  return static_cast<int>(pipeline_.size()) == num_workers() &&
         std::all_of(pipeline_.begin(), pipeline_.end(),
                     [](const auto& l) { return l->ready && !l->lost; });
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
  auto it = std::find_if(pipeline_.begin(), pipeline_.end(),
                         [&](const auto& l) { return l.get() == &link; });
  if (it == pipeline_.end()) return;
  if (!link.assigned) {
    // The pipeline was still forming: the others keep waiting, in registration order.
    pipeline_.erase(it);
    for (size_t i = 0; i < pipeline_.size(); ++i) {
      pipeline_[i]->Place(static_cast<int>(i), options_.num_stages, options_.expert_parallel);
    }
    return;
  }
  if (shutting_down_) {
    if (link.ready) std::cerr << "bitserve serve: worker " << link.Name() << " left" << std::endl;
  } else {
    last_loss_ = absl::StrCat("worker ", link.Name(), " lost: ", reason);
    std::cerr << "bitserve serve: " << last_loss_ << std::endl;
  }
  // The pipeline breaks up: the other stages' KV cache and transport are useless without this
  // one, so they register again and a new pipeline forms around the replacement.
  for (auto& other : pipeline_) {
    if (other.get() == &link || other->lost) continue;
    other->lost = true;
    other->lost_by_peer = true;
    other->lost_reason = absl::StrCat("the pipeline lost worker ", link.Name());
    if (!shutting_down_) rejoin_.push_back(other);
  }
  pipeline_.clear();
}

void WorkerHub::Monitor() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    changed_.wait_for(lock, options_.heartbeat_interval / 2);
    for (const auto& link : std::vector<std::shared_ptr<Link>>(pipeline_)) {
      if (link->assigned && !link->lost &&
          WorkerLinkClock::now() - link->last_heard > options_.heartbeat_timeout) {
        const std::string reason = absl::StrCat(
            "no heartbeat for ", Millis(WorkerLinkClock::now() - link->last_heard), " ms");
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
    const wire::CoordinatorMessage message = RejoinMessage();
    for (auto& link : rejoin) link->WriteRejoin(message);
    lock.lock();
  }
}

::grpc::Status WorkerHub::Attach(::grpc::ServerContext* context, WorkerStream* stream) {
  if (!options_.join_secret.empty()) {
    const auto& metadata = context->client_metadata();
    auto it = metadata.find("authorization");
    const absl::string_view sent = it == metadata.end()
                                       ? absl::string_view()
                                       : absl::string_view(it->second.data(), it->second.size());
    if (!ApiKeys::FromKeys({options_.join_secret}).Allows(sent)) {
      std::cerr << "bitserve serve: refused a worker from " << context->peer()
                << ": join secret missing or wrong" << std::endl;
      return ::grpc::Status(::grpc::StatusCode::UNAUTHENTICATED,
                            "the coordinator asks for a join secret (bitserve worker "
                            "--secret-file F or $BITSERVE_WORKER_SECRET) and this one is missing "
                            "or wrong");
    }
  }
  wire::WorkerMessage message;
  if (!stream->Read(&message) || !message.has_register_()) {
    return ::grpc::Status(::grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message must be Register");
  }
  const wire::Register& reg = message.register_();
  const int n = num_workers();
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
    return reject(
        ::grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("a pipeline of ", n, " workers needs the worker's transport_address"));
  }
  auto link = std::make_shared<Link>();
  link->worker_id = reg.worker_id().empty() ? context->peer() : reg.worker_id();
  link->transport_address = reg.transport_address();
  link->device_kind = reg.device().kind();
  link->hostname = reg.device().hostname();
  link->pci_bus_id = reg.device().pci_bus_id();
  if (n > 1 && options_.pp_transport == PipelineTransport::kNccl && link->device_kind != "cuda") {
    return reject(
        ::grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("this coordinator's pipeline runs over NCCL (--pp-transport nccl); a ",
                     link->device_kind, " worker cannot join it"));
  }
  link->context = context;
  link->stream = stream;
  link->last_heard = WorkerLinkClock::now();
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (shutting_down_)
      return reject(::grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    if (static_cast<int>(pipeline_.size()) == n) {
      return reject(::grpc::StatusCode::ALREADY_EXISTS,
                    n == 1 ? absl::StrCat("worker ", pipeline_[0]->worker_id,
                                          " holds the model; this coordinator runs one worker")
                           : absl::StrCat("the pipeline has its ", n, " workers"));
    }
    link->Place(static_cast<int>(pipeline_.size()), options_.num_stages, options_.expert_parallel);
    pipeline_.push_back(link);
    std::cerr << "bitserve serve: worker " << link->worker_id << " (" << reg.device().kind() << ", "
              << context->peer() << ") registered"
              << (n == 1 ? std::string()
                  : options_.expert_parallel == 1
                      ? absl::StrCat(" for stage ", link->stage, " of ", n)
                      : absl::StrCat(" as ", link->Name(), ", worker ", link->slot + 1, " of ", n))
              << std::endl;
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
  bool rejoin = false;
  while (stream->Read(&message)) {
    std::lock_guard<std::mutex> lock(mu_);
    if (link->lost) {
      // Lost because a peer was: the worker must hear "register again" before its stream ends
      // (the monitor writes it too, but this handler may end the stream first: a survivor whose
      // step failed on the lost peer answers at once).
      rejoin = link->lost_by_peer && !shutting_down_;
      break;
    }
    link->last_heard = WorkerLinkClock::now();
    if (message.has_step_result()) {
      link->results[message.step_result().step_id()] = message.step_result();
      changed_.notify_all();
    } else if (message.has_failure()) {
      MarkLost(*link, absl::StrCat("it failed: ", message.failure().status().message()));
      break;
    } else if (message.has_ready() && !link->ready) {
      if (absl::Status s = AcceptReady(*link, message.ready()); !s.ok()) {
        std::cerr << "bitserve serve: refused worker " << link->worker_id << ": " << s.message()
                  << std::endl;
        MarkLost(*link, std::string(s.message()));
        end = ::grpc::Status(::grpc::StatusCode::FAILED_PRECONDITION, std::string(s.message()));
        break;
      }
    }
  }
  if (rejoin) link->WriteRejoin(RejoinMessage());
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

absl::Status WorkerHub::WaitForWorker(WorkerLinkClock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!changed_.wait_until(lock, deadline,
                           [&] { return pipelines_ready_ > 0 || shutting_down_; }) ||
      pipelines_ready_ == 0) {
    return absl::DeadlineExceededError("no worker became ready");
  }
  return absl::OkStatus();
}

absl::Status WorkerHub::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return HealthLocked();
}

absl::Status WorkerHub::HealthLocked() const {
  if (Whole()) return absl::OkStatus();
  const std::string what =
      num_workers() == 1
          ? std::string(pipelines_ready_ == 0 ? "no worker attached yet" : "no worker attached")
      : options_.expert_parallel == 1 ? absl::StrCat("the pipeline has ", ReadyStages(), " of ",
                                                     options_.num_stages, " stages ready")
                                      : absl::StrCat("the pipeline has ", ReadyStages(), " of ",
                                                     num_workers(), " workers ready");
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
