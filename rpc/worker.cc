#include "rpc/worker.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/device_name.h"
#include "base/status_macros.h"
#include "bitserve/internal/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "rpc/worker_protocol.h"
#include "runtime/engine/engine.h"
#include "runtime/transport/nccl_expert_exchange.h"
#include "runtime/transport/nccl_transport.h"
#include "runtime/transport/tcp_transport.h"
#include "runtime/transport/transport_expert_exchange.h"

namespace bitserve::rpc {
namespace {

using Clock = std::chrono::steady_clock;
using Stream = ::grpc::ClientReaderWriter<wire::WorkerMessage, wire::CoordinatorMessage>;

std::string DefaultWorkerId(const std::string& device) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ":", getpid(), ":", device);
}

// Writes from the step loop and the heartbeat thread; gRPC allows one writer at a time.
class Sender {
 public:
  explicit Sender(Stream* stream) : stream_(stream) {}
  bool Send(const wire::WorkerMessage& message) {
    std::lock_guard<std::mutex> lock(mu_);
    return !closed_ && stream_->Write(message);
  }
  // No writes after this one (the heartbeat thread may still try: it gets false).
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) stream_->WritesDone();
    closed_ = true;
  }

 private:
  std::mutex mu_;
  Stream* stream_;
  bool closed_ = false;
};

// Sends a heartbeat every interval until destroyed.
class Heartbeat {
 public:
  Heartbeat(Sender* sender, std::chrono::milliseconds interval,
            const std::atomic<uint64_t>* steps_done)
      : thread_([this, sender, interval, steps_done] {
          std::unique_lock<std::mutex> lock(mu_);
          uint64_t sequence = 0;
          while (!cv_.wait_for(lock, interval, [&] { return stop_; })) {
            wire::WorkerMessage m;
            wire::Heartbeat& h = *m.mutable_heartbeat();
            h.set_sequence(++sequence);
            h.set_unix_time_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
            h.set_steps_done(steps_done->load());
            if (!sender->Send(m)) return;
          }
        }) {}
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// The coordinator's messages, read on their own thread so that a Shutdown reaches the worker
// even while a step waits on a peer stage (it aborts the transport).
class Inbox {
 public:
  Inbox(Stream* stream, Transport* transport)
      : thread_([this, stream, transport] {
          wire::CoordinatorMessage m;
          while (stream->Read(&m)) {
            const bool last = m.has_shutdown();
            if (last && transport != nullptr) transport->Abort();
            Push(std::move(m));
            if (last) return;
          }
          if (transport != nullptr) transport->Abort();
          Push(std::nullopt);  // the stream ended
        }) {}
  ~Inbox() { thread_.join(); }
  // The next message; nullopt when the stream has ended.
  std::optional<wire::CoordinatorMessage> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    auto m = std::move(queue_.front());
    queue_.pop_front();
    return m;
  }

 private:
  void Push(std::optional<wire::CoordinatorMessage> m) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(m));
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::optional<wire::CoordinatorMessage>> queue_;
  std::thread thread_;
};

// Where a stage's hidden states come from and go to (transport ranks; -1: none), and whether the
// worker is a rank of an expert-parallel group (rank r of stage s is transport rank s * E + r; its
// hidden states cross to rank r of the next stage).
struct StagePeers {
  int previous = -1, next = -1;
  bool expert_parallel = false;
};

// An expert-parallel rank whose own plan failed before its layers ran still takes part in the
// step's exchanges, with no tokens, so that the other ranks of its group are not left waiting.
void TakePartWithNoTokens(Engine& engine) {
  std::vector<uint8_t> output;
  std::vector<SampleResult> results;
  StageIo io;
  io.output = &output;
  const absl::Status s = engine.stage().whole_model() ? engine.Step({}, {}, &results)
                                                      : engine.StageStep({}, {}, io, &results);
  s.IgnoreError();  // the step fails anyway; a broken exchange shows in the next one
}

// One step of this worker's stage: hidden states in from the previous stage, out to the next.
// Host messages (TCP) or device ones (NCCL, `device`: the engine's buffers). Every stage sees the
// same plan (with expert parallelism: every stage's rank r sees rank r's part), so a plan that does
// not decode or exceeds max_batch_tokens fails on every stage before anything crosses. Otherwise
// each stage but the last sends exactly one message per step: over TCP an empty one when its step
// failed (the next stage then fails it too), over NCCL, which has no sizes, the full-size message
// whatever its contents; the coordinator fails a step that any stage failed.
absl::Status RunStep(Engine& engine, Transport* transport, const DeviceStageBuffers* device,
                     const StagePeers& peers, const wire::StepPlan& plan, DecodedStep& step,
                     std::vector<uint8_t>& input, std::vector<uint8_t>& output,
                     std::vector<SampleResult>& results, TransferDtype dtype,
                     double* transfer_seconds) {
  const PipelineStage& stage = engine.stage();
  if (absl::Status s = DecodeStep(plan, &step); !s.ok()) {
    if (peers.expert_parallel) TakePartWithNoTokens(engine);
    return s;
  }
  if (stage.whole_model()) return engine.Step(step.entries, step.samples, &results);
  int64_t tokens = 0;
  for (const BatchEntry& e : step.entries) tokens += static_cast<int64_t>(e.tokens.size());
  if (tokens > engine.max_batch_tokens()) {
    if (peers.expert_parallel) TakePartWithNoTokens(engine);
    return absl::InvalidArgumentError(
        absl::StrCat("the step has ", tokens, " tokens; the limit is ", engine.max_batch_tokens()));
  }
  const int64_t bytes = TransferBytes(dtype, tokens, engine.config().hidden_size);
  // Time in the transport, waits for the peer included.
  auto timed = [transfer_seconds](auto&& call) {
    const auto start = Clock::now();
    absl::Status s = call();
    *transfer_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    return s;
  };
  StageIo io;
  io.on_device = device != nullptr;
  io.output = &output;
  absl::Status status;
  if (!stage.first()) {
    if (device != nullptr) {
      status = timed([&] { return transport->Recv(peers.previous, device->input, bytes); });
    } else {
      input.resize(bytes);
      status = timed([&] { return transport->Recv(peers.previous, input.data(), bytes); });
      io.input = input;
    }
  }
  if (status.ok()) {
    status = engine.StageStep(step.entries, step.samples, io, &results);
  } else if (peers.expert_parallel) {
    TakePartWithNoTokens(engine);
  }
  if (!stage.last()) {
    const absl::Status sent = timed([&] {
      if (device != nullptr) return transport->Send(peers.next, device->output, bytes);
      return status.ok()
                 ? transport->Send(peers.next, output.data(), static_cast<int64_t>(output.size()))
                 : transport->Send(peers.next, nullptr, 0);
    });
    if (status.ok()) status = sent;
  }
  return status;
}

// One registration with the coordinator: the stream and its writer. Finish ends the stream and
// returns `why` with the coordinator's closing status added; Fail first reports `why` to it.
struct Session {
  std::shared_ptr<::grpc::Channel> channel;
  ::grpc::ClientContext context;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<Sender> sender;
  std::unique_ptr<TcpListener> listener;  // where later stages dial this one (TCP transport)

  absl::Status Finish(absl::Status why) {
    sender->Close();
    ::grpc::Status s = stream->Finish();
    if (why.ok() || s.ok()) return why;
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat(why.message(), ": ", s.error_message()));
  }
  absl::Status Fail(const absl::Status& why) {
    wire::WorkerMessage failure;
    *failure.mutable_failure()->mutable_status() = StatusToProto(why);
    sender->Send(failure);
    return Finish(why);
  }
};

// The coordinator's first answer to a registration.
struct Answer {
  std::optional<wire::Assignment> assignment;  // what to load and serve
  bool rejoin = false;                         // without an assignment: register again
};

// Why `channel` did not connect, as gRPC last saw it (connection refused, a TLS handshake that
// failed), or "" when it does not know (still connecting). A call that does not wait for the
// connection fails at once with the channel's last error; it is made only in TRANSIENT_FAILURE,
// so it reaches no coordinator. A coordinator whose TLS handshake refuses the worker (no client
// certificate, one of another CA, no TLS at all) just closes the connection (FIN, or RST when
// the worker's data is still unread): say what that means.
std::string ConnectionError(const std::shared_ptr<::grpc::Channel>& channel) {
  if (channel->GetState(false) != GRPC_CHANNEL_TRANSIENT_FAILURE) return "";
  ::grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  const ::grpc::Status s = wire::Coordinator::NewStub(channel)->Attach(&context)->Finish();
  if (s.error_code() != ::grpc::StatusCode::UNAVAILABLE) return "";
  std::string why = absl::StrCat(": ", s.error_message());
  if (absl::StrContains(why, "Socket closed") || absl::StrContains(why, "Connection reset")) {
    absl::StrAppend(&why,
                    " (the coordinator closed the connection, as it does when its TLS handshake "
                    "refuses this worker: it asks for TLS, --tls-ca, or does not accept this "
                    "worker's certificate, --tls-cert; its log says which)");
  }
  return why;
}

// Step 1: dials the coordinator and registers. A refusal is an error with the coordinator's reason.
absl::StatusOr<Answer> Register(const WorkerOptions& options, const std::string& worker_id,
                                Session& session) {
  ::grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // A coordinator that vanishes without closing the connection (its node lost, the network cut)
  // is noticed: the connection ends when a keepalive ping or sent data (heartbeats) goes
  // unacknowledged for the timeout (gRPC also sets it as TCP_USER_TIMEOUT), and the worker then
  // leaves as for any coordinator gone, instead of waiting for TCP to give up (about 15 minutes).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(kWorkerKeepaliveTime.count()));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(kWorkerKeepaliveTimeout.count()));
  session.channel = ::grpc::CreateCustomChannel(
      options.coordinator_address,
      options.credentials ? options.credentials : ::grpc::InsecureChannelCredentials(), args);
  if (!session.channel->WaitForConnected(std::chrono::system_clock::now() +
                                         options.connect_timeout)) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the coordinator at ", options.coordinator_address, " within ",
                     options.connect_timeout.count(), " ms", ConnectionError(session.channel)));
  }
  ASSIGN_OR_RETURN(session.listener, TcpListener::Listen(options.transport_host, 0));
  auto stub = wire::Coordinator::NewStub(session.channel);
  if (!options.join_secret.empty()) {
    session.context.AddMetadata("authorization", "Bearer " + options.join_secret);
  }
  session.stream = stub->Attach(&session.context);
  session.sender = std::make_unique<Sender>(session.stream.get());

  wire::WorkerMessage hello;
  wire::Register& reg = *hello.mutable_register_();
  reg.set_protocol_version(kWorkerProtocolVersion);
  reg.set_worker_id(worker_id);
  const bool cuda = IsCudaDevice(options.device);
  reg.mutable_device()->set_kind(cuda ? "cuda" : "cpu");
  reg.mutable_device()->set_name(options.device);
  {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    reg.mutable_device()->set_hostname(host);
  }
  if (cuda) {
    // The coordinator chooses NCCL only for stages on distinct GPUs; unknown (no NCCL here): TCP.
    if (auto bus = CudaPciBusId(options.device); bus.ok())
      reg.mutable_device()->set_pci_bus_id(*bus);
  }
  reg.set_build_version("bitserve");
  reg.set_transport_address(session.listener->address());
  wire::CoordinatorMessage message;
  if (!session.sender->Send(hello) || !session.stream->Read(&message)) {
    return session.Finish(
        absl::UnavailableError("the coordinator closed the stream at registration"));
  }
  if (message.has_reject()) {
    absl::Status why = StatusFromProto(message.reject().status());
    session.sender->Close();
    session.stream->Finish();
    return absl::Status(why.code(),
                        absl::StrCat("the coordinator refused this worker: ", why.message()));
  }
  Answer answer;
  if (message.has_shutdown()) {
    session.Finish(absl::OkStatus()).IgnoreError();
    answer.rejoin = message.shutdown().rejoin();
    return answer;
  }
  if (!message.has_assignment()) {
    return session.Finish(
        absl::InternalError("the coordinator's first message is not an Assignment"));
  }
  answer.assignment = message.assignment();
  return answer;
}

// What an assignment loaded: the engine, and for a pipeline stage its transport to the others.
struct Loaded {
  std::unique_ptr<Engine> engine;
  std::shared_ptr<Transport> transport;             // shared with an expert exchange
  std::shared_ptr<ExpertExchange> expert_exchange;  // expert parallelism (shared with the engine)
  StagePeers peers;
  std::optional<DeviceStageBuffers> device_buffers;  // NCCL: messages stay in device memory
  TransferDtype pp_transfer = TransferDtype::kInt8;
  double load_seconds = 0;
};

// What the coordinator checks of a loaded worker and sizes its scheduler by.
wire::WorkerMessage ReadyMessage(const wire::Assignment& a, const Loaded& loaded) {
  const Engine& engine = *loaded.engine;
  wire::WorkerMessage message;
  wire::Ready& r = *message.mutable_ready();
  r.set_assignment_id(a.assignment_id());
  r.set_num_kv_blocks(engine.num_kv_blocks());
  r.set_load_seconds(loaded.load_seconds);
  const ModelConfig& c = engine.config();
  r.set_vocab_size(c.vocab_size);
  r.set_num_hidden_layers(c.num_hidden_layers);
  r.set_hidden_size(c.hidden_size);
  r.set_block_size(engine.block_size());
  r.set_max_model_len(static_cast<int32_t>(engine.max_model_len()));
  r.set_max_batch_tokens(engine.max_batch_tokens());
  r.set_device_name(engine.device_name());
  r.set_kv_dtype(KvDtypeToProto(engine.kv_dtype()));
  r.set_kv_rotation(KvRotationToProto(engine.kv_rotation()));
  r.set_lm_head_dtype(LmHeadDtypeToProto(engine.lm_head_dtype()));
  return message;
}

// Step 2: connects the transport and loads the shard `a` asks for (its errors are the worker's
// failure, reported by the caller).
absl::StatusOr<Loaded> LoadAssignment(const WorkerOptions& options, const std::string& worker_id,
                                      const wire::Assignment& a, Session& session) {
  EngineOptions engine_options;
  engine_options.device = options.device;
  engine_options.block_size = a.kv_cache().block_size();
  engine_options.num_kv_blocks = a.kv_cache().num_blocks();
  if (a.kv_cache().memory_fraction() > 0)
    engine_options.kv_memory_fraction = a.kv_cache().memory_fraction();
  ASSIGN_OR_RETURN(engine_options.kv_dtype,
                   KvDtypeFromProto(a.kv_cache().dtype(), "Assignment.kv_cache.dtype"));
  ASSIGN_OR_RETURN(engine_options.kv_rotation,
                   KvRotationFromProto(a.kv_cache().rotation(), "Assignment.kv_cache.rotation"));
  ASSIGN_OR_RETURN(
      engine_options.lm_head_dtype,
      LmHeadDtypeFromProto(a.shard().lm_head_dtype(), "Assignment.shard.lm_head_dtype"));
  engine_options.max_model_len = a.max_model_len();
  if (a.dummy_weights()) engine_options.load_format = LoadFormat::kDummy;
  engine_options.max_batch_tokens = a.max_batch_tokens();
  const wire::ModelShard& shard = a.shard();
  engine_options.stage = {shard.pipeline_stage(), shard.num_pipeline_stages(), shard.layer_begin(),
                          shard.layer_end()};
  Loaded loaded;
  // The expert-parallel group, checked against the world before anything is sized by it.
  ASSIGN_OR_RETURN(std::vector<int> group, ExpertGroupRanks(a));
  const int ep = static_cast<int>(group.size());
  if (a.world_size() > 1) {
    ASSIGN_OR_RETURN(engine_options.pp_transfer,
                     TransferDtypeFromProto(a.transport().activation_dtype(),
                                            "Assignment.transport.activation_dtype"));
    if (a.transport().has_nccl()) {
      // Before the engine takes the device memory it sizes its KV cache from.
      const wire::NcclBootstrap& nccl = a.transport().nccl();
      ASSIGN_OR_RETURN(loaded.transport,
                       NcclTransport::Connect(nccl.unique_id(), nccl.rank(), nccl.world_size(),
                                              options.device, options.connect_timeout));
    } else if (a.transport().has_cpu()) {
      const auto& peers = a.transport().cpu().peer_addresses();
      ASSIGN_OR_RETURN(
          loaded.transport,
          TcpTransport::Connect(std::move(session.listener), a.transport().cpu().rank(),
                                std::vector<std::string>(peers.begin(), peers.end())));
    } else {
      return absl::InvalidArgumentError("the assignment of a pipeline stage names no transport");
    }
    const int me = loaded.transport->rank();
    if (shard.pipeline_stage() > 0) loaded.peers.previous = me - ep;
    if (shard.pipeline_stage() + 1 < shard.num_pipeline_stages()) loaded.peers.next = me + ep;
  }
  if (ep > 1) {
    if (loaded.transport == nullptr) {
      return absl::InvalidArgumentError("an expert-parallel assignment names no transport");
    }
    // NCCL moves the rows in device memory; TCP in host memory.
    const ExpertResultDtype results =
        shard.expert_results_bf16() ? ExpertResultDtype::kBf16 : ExpertResultDtype::kF32;
    if (auto nccl = std::dynamic_pointer_cast<NcclTransport>(loaded.transport); nccl != nullptr) {
      ASSIGN_OR_RETURN(engine_options.expert_exchange,
                       NcclExpertExchange::Create(std::move(nccl), std::move(group),
                                                  shard.rank_in_expert_group(), results));
    } else {
      ASSIGN_OR_RETURN(engine_options.expert_exchange,
                       TransportExpertExchange::Create(loaded.transport, std::move(group),
                                                       shard.rank_in_expert_group(), results));
    }
    engine_options.expert_owner.assign(shard.expert_owner().begin(), shard.expert_owner().end());
    loaded.peers.expert_parallel = true;
    loaded.expert_exchange = engine_options.expert_exchange;
  }
  loaded.pp_transfer = engine_options.pp_transfer;
  const std::string model_dir = options.model_dir.empty() ? a.model_dir() : options.model_dir;
  std::cerr << "bitserve worker " << worker_id << ": loading " << model_dir << " on "
            << options.device;
  if (shard.num_pipeline_stages() > 1) {
    std::cerr << ", stage " << shard.pipeline_stage() << " of " << shard.num_pipeline_stages()
              << " (layers " << shard.layer_begin() << "-" << shard.layer_end() - 1 << ")";
  }
  if (ep > 1) {
    std::cerr << ", expert-parallel rank " << shard.rank_in_expert_group() << " of " << ep << " ("
              << shard.expert_ids_size() << " experts)";
  }
  std::cerr << std::endl;
  const auto load_start = Clock::now();
  ASSIGN_OR_RETURN(loaded.engine, LoadEngine(model_dir, engine_options));
  if (a.transport().has_nccl()) {
    ASSIGN_OR_RETURN(DeviceStageBuffers buffers, loaded.engine->device_stage_buffers());
    loaded.device_buffers = buffers;
  }
  loaded.load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  return loaded;
}

// The rows each routed expert held here ran in the step, per MoE layer that ran any.
void AddExpertLoad(const Engine& engine, wire::StepResult* result) {
  const std::span<const int64_t> rows = engine.last_step_expert_rows();
  const int experts = engine.config().num_experts;
  if (rows.empty() || experts == 0) return;
  for (size_t l = 0; l * experts < rows.size(); ++l) {
    const auto layer = rows.subspan(l * experts, experts);
    if (std::all_of(layer.begin(), layer.end(), [](int64_t n) { return n == 0; })) continue;
    wire::ExpertLoad* load = result->add_expert_load();
    load->set_layer(engine.stage().layer_begin + static_cast<int>(l));
    load->mutable_rows()->Add(layer.begin(), layer.end());
  }
}

// Step 3: runs the step plans that arrive until the coordinator sends Shutdown (returns whether it
// asks to register again) or goes away.
absl::StatusOr<bool> ServeSteps(const WorkerOptions& options, const std::string& worker_id,
                                Session& session, Loaded& loaded,
                                std::atomic<uint64_t>& steps_done) {
  Inbox inbox(session.stream.get(), loaded.transport.get());
  DecodedStep step;
  std::vector<uint8_t> input, output;
  std::vector<SampleResult> results;
  while (true) {
    std::optional<wire::CoordinatorMessage> next = inbox.Pop();
    if (!next) {
      return session.Finish(absl::UnavailableError(
          absl::StrCat("the coordinator at ", options.coordinator_address, " went away")));
    }
    if (next->has_shutdown()) {
      std::cerr << "bitserve worker " << worker_id << ": " << next->shutdown().reason()
                << std::endl;
      session.Finish(absl::OkStatus()).IgnoreError();
      return next->shutdown().rejoin();
    }
    if (!next->has_step()) continue;
    wire::WorkerMessage reply;
    wire::StepResult& result = *reply.mutable_step_result();
    result.set_step_id(next->step().step_id());
    result.set_pipeline_stage(loaded.engine->stage().stage);
    const auto start = Clock::now();
    results.clear();
    double transfer_seconds = 0;
    const absl::Status status =
        RunStep(*loaded.engine, loaded.transport.get(),
                loaded.device_buffers ? &*loaded.device_buffers : nullptr, loaded.peers,
                next->step(), step, input, output, results, loaded.pp_transfer, &transfer_seconds);
    if (status.ok()) {
      EncodeResults(results, step.sampled_seq_ids, &result);
      AddExpertLoad(*loaded.engine, &result);
    } else {
      *result.mutable_status() = StatusToProto(status);
    }
    if (loaded.expert_exchange != nullptr) {
      result.set_expert_exchange_seconds(loaded.expert_exchange->TakeSeconds());
    }
    result.set_compute_seconds(std::chrono::duration<double>(Clock::now() - start).count() -
                               transfer_seconds);
    result.set_transfer_seconds(transfer_seconds);
    ++steps_done;
    if (!session.sender->Send(reply)) {
      return session.Finish(
          absl::UnavailableError("the coordinator went away while a step result was sent"));
    }
  }
}

// One registration: register, load the assignment, serve it. True when the coordinator asks this
// worker to register again.
absl::StatusOr<bool> RunOnce(const WorkerOptions& options, const std::string& worker_id) {
  Session session;
  ASSIGN_OR_RETURN(const Answer answer, Register(options, worker_id, session));
  if (!answer.assignment) return answer.rejoin;
  const wire::Assignment& a = *answer.assignment;
  // Heartbeats from here on, loading included.
  std::atomic<uint64_t> steps_done{0};
  Heartbeat heartbeat(session.sender.get(),
                      std::chrono::milliseconds(std::max(50, a.heartbeat_interval_ms())),
                      &steps_done);
  absl::StatusOr<Loaded> loaded = LoadAssignment(options, worker_id, a, session);
  if (!loaded.ok()) return session.Fail(loaded.status());
  if (!session.sender->Send(ReadyMessage(a, *loaded))) {
    return session.Finish(absl::UnavailableError("the coordinator went away"));
  }
  std::cerr << "bitserve worker " << worker_id << ": ready on " << loaded->engine->device_name()
            << ", " << loaded->engine->num_kv_blocks() << " KV blocks" << std::endl;
  return ServeSteps(options, worker_id, session, *loaded, steps_done);
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options) {
  const std::string worker_id =
      options.worker_id.empty() ? DefaultWorkerId(options.device) : options.worker_id;
  while (true) {
    ASSIGN_OR_RETURN(const bool rejoin, RunOnce(options, worker_id));
    if (!rejoin) return absl::OkStatus();
    std::cerr << "bitserve worker " << worker_id << ": registering again" << std::endl;
  }
}

}  // namespace bitserve::rpc
