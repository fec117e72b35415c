// The coordinator with its engine on a worker over the internal protocol, on loopback: a real
// worker (RunWorker) gives exactly the tokens of the in-process engine; a worker that stops
// heartbeating is detected and fails the step in flight; bad registrations are refused; a
// replacement worker restores service; a worker that cannot connect says why.
#include "rpc/worker_hub.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "rpc/coordinator.h"
#include "rpc/worker.h"
#include "rpc/worker_protocol.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"

namespace bitserve::rpc {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const fs::path& Model() {
  static const fs::path dir = [] {
    fs::path d =
        fs::temp_directory_path() / ("bitserve_worker_hub_test_" + std::to_string(getpid()));
    auto preset = FindModelPreset("test-gqa");
    EXPECT_TRUE(preset.ok());
    EXPECT_TRUE(WriteSyntheticCheckpoint(*preset, d, {}).ok());
    return d;
  }();
  return dir;
}

// A hub behind a gRPC server on a free loopback port.
struct Hub {
  std::unique_ptr<WorkerHub> hub;
  std::unique_ptr<grpc::Server> server;
  std::string address;

  explicit Hub(int num_kv_blocks = 64, milliseconds timeout = milliseconds(600), int num_stages = 1,
               PipelineTransport transport = PipelineTransport::kAuto,
               std::vector<int> pipeline_split = {}) {
    WorkerHubOptions options;
    options.num_stages = num_stages;
    options.pipeline_split = std::move(pipeline_split);
    options.pp_transport = transport;
    options.model_dir = Model();
    options.engine.block_size = 4;
    options.engine.num_kv_blocks = num_kv_blocks;
    options.engine.max_batch_tokens = 64;
    options.engine.max_model_len = 128;
    options.heartbeat_interval = milliseconds(100);
    options.heartbeat_timeout = timeout;
    auto h = WorkerHub::Create(options);
    EXPECT_TRUE(h.ok()) << h.status();
    hub = *std::move(h);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    WorkerHub::ConfigureServer(builder);
    builder.RegisterService(hub.get());
    server = builder.BuildAndStart();
    address = "127.0.0.1:" + std::to_string(port);
  }
  ~Hub() {
    hub->Shutdown();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server->Wait();
  }
};

// A hand-driven worker: the protocol without an engine, to misbehave on purpose.
struct FakeWorker {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<wire::Coordinator::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<wire::WorkerMessage, wire::CoordinatorMessage>> stream;

  explicit FakeWorker(const std::string& address, uint32_t version = kWorkerProtocolVersion,
                      const wire::DeviceInfo& device = {}) {
    channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    stub = wire::Coordinator::NewStub(channel);
    stream = stub->Attach(&context);
    wire::WorkerMessage m;
    m.mutable_register_()->set_protocol_version(version);
    m.mutable_register_()->set_worker_id("fake");
    m.mutable_register_()->set_transport_address("127.0.0.1:1");
    *m.mutable_register_()->mutable_device() = device;
    EXPECT_TRUE(stream->Write(m));
  }
  wire::CoordinatorMessage Read() {
    wire::CoordinatorMessage m;
    EXPECT_TRUE(stream->Read(&m));
    return m;
  }
  void SendReady(int num_kv_blocks, wire::KvRotation rotation = wire::KV_ROTATION_NONE,
                 wire::LmHeadDtype lm_head = wire::LM_HEAD_DTYPE_BF16) {
    auto config = LoadModelConfig(Model());
    ASSERT_TRUE(config.ok());
    wire::WorkerMessage m;
    wire::Ready& r = *m.mutable_ready();
    r.set_num_kv_blocks(num_kv_blocks);
    r.set_vocab_size(config->vocab_size);
    r.set_num_hidden_layers(config->num_hidden_layers);
    r.set_hidden_size(config->hidden_size);
    r.set_block_size(4);
    r.set_max_model_len(128);
    r.set_max_batch_tokens(64);
    r.set_device_name("fake");
    r.set_kv_dtype(wire::KV_DTYPE_F32);
    r.set_kv_rotation(rotation);
    r.set_lm_head_dtype(lm_head);
    ASSERT_TRUE(stream->Write(m));
  }
};

CoordinatorOptions Options() {
  CoordinatorOptions options;
  options.model_dir = Model();
  options.engine.block_size = 4;
  options.engine.num_kv_blocks = 64;
  options.engine.max_batch_tokens = 64;
  options.engine.max_model_len = 128;
  options.scheduler.max_num_seqs = 8;
  options.scheduler.max_num_batched_tokens = 64;
  options.scheduler.long_prefill_chunk = 16;
  options.scheduler.max_model_len = 128;
  options.log_requests = false;
  return options;
}

// Runs requests to the end; returns each one's tokens, or its final status when it failed.
struct Outcome {
  std::vector<int32_t> tokens;
  absl::Status status;
};
std::vector<Outcome> RunAll(GenerationBackend& backend, int n, int max_tokens) {
  std::vector<std::promise<Outcome>> done(n);
  std::vector<std::vector<int32_t>> tokens(n);
  for (int i = 0; i < n; ++i) {
    GenerationParams params;
    params.max_new_tokens = max_tokens;
    params.ignore_eos = true;
    auto id =
        backend.Submit(TokenInput{{1, 5 + i, 9, 2 * i + 3}}, params, [&, i](GenerationChunk c) {
          tokens[i].insert(tokens[i].end(), c.token_ids.begin(), c.token_ids.end());
          if (c.final) done[i].set_value({tokens[i], c.status});
        });
    if (!id.ok()) done[i].set_value({{}, id.status()});
  }
  std::vector<Outcome> out;
  for (auto& d : done) {
    auto f = d.get_future();
    EXPECT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    out.push_back(f.get());
  }
  return out;
}

TEST(WorkerHubTest, RemoteWorkerGivesTheLocalEnginesTokens) {
  auto local = Coordinator::Create(Options());
  ASSERT_TRUE(local.ok()) << local.status();
  const std::vector<Outcome> expected = RunAll(**local, 6, 12);

  Hub hub;
  EXPECT_EQ(hub.hub->Health().code(), absl::StatusCode::kUnavailable);
  std::future<absl::Status> worker = std::async(std::launch::async, [&] {
    WorkerOptions options;
    options.coordinator_address = hub.address;
    options.worker_id = "w0";
    return RunWorker(options);
  });
  ASSERT_TRUE(hub.hub->WaitForWorker(Clock::now() + std::chrono::seconds(30)).ok());
  EXPECT_TRUE(hub.hub->Health().ok());
  auto remote = Coordinator::Create(Options(), hub.hub->MakeEngine());
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_TRUE((*remote)->Ready());
  auto info = (*remote)->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kv_num_blocks, 64);
  EXPECT_NE(info->device.find("w0"), std::string::npos) << info->device;
  const std::vector<Outcome> got = RunAll(**remote, 6, 12);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(expected[i].status.ok()) << expected[i].status;
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, expected[i].tokens) << "request " << i;
  }
  (*remote)->Shutdown();
  hub.hub->Shutdown();  // the worker is told to exit and does, cleanly
  ASSERT_EQ(worker.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(worker.get().ok());
}

TEST(WorkerHubTest, SilentWorkerIsLostAndItsStepFailsUnavailable) {
  Hub hub(/*num_kv_blocks=*/64, /*timeout=*/milliseconds(500));
  FakeWorker fake(hub.address);
  ASSERT_TRUE(fake.Read().has_assignment());
  fake.SendReady(64);
  ASSERT_TRUE(hub.hub->WaitForWorker(Clock::now() + std::chrono::seconds(10)).ok());
  std::unique_ptr<Engine> engine = hub.hub->MakeEngine();
  const std::vector<int32_t> tokens = {1, 2, 3}, table = {0};
  const BatchEntry entry{0, tokens, table, LogitsWanted::kLast};
  static const SamplingParams greedy;
  const SampleSpec spec{&greedy, 0, 0, {}, {}};
  std::vector<SampleResult> results;
  const auto start = Clock::now();
  // The fake reads the plan and never answers nor heartbeats: lost after the timeout.
  const absl::Status status = engine->Step({&entry, 1}, {&spec, 1}, &results);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("no heartbeat"), std::string::npos) << status;
  EXPECT_LT(seconds, 5.0);
  EXPECT_EQ(hub.hub->Health().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(hub.hub->Health().message().find("fake"), std::string::npos) << hub.hub->Health();
  // Later steps fail at once while no worker is attached.
  EXPECT_EQ(engine->Step({&entry, 1}, {&spec, 1}, &results).code(), absl::StatusCode::kUnavailable);
}

TEST(WorkerHubTest, LostWorkerFailsRequestsAndAReplacementRestoresService) {
  Hub hub(/*num_kv_blocks=*/64, /*timeout=*/milliseconds(500));
  auto fake = std::make_unique<FakeWorker>(hub.address);
  ASSERT_TRUE(fake->Read().has_assignment());
  fake->SendReady(64);
  ASSERT_TRUE(hub.hub->WaitForWorker(Clock::now() + std::chrono::seconds(10)).ok());
  auto coordinator = Coordinator::Create(Options(), hub.hub->MakeEngine());
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  // The fake dies (its stream is cancelled) with requests in flight: they end UNAVAILABLE.
  std::thread killer([&] {
    std::this_thread::sleep_for(milliseconds(200));
    fake->context.TryCancel();
  });
  const std::vector<Outcome> failed = RunAll(**coordinator, 3, 8);
  killer.join();
  for (const Outcome& o : failed) {
    EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable) << o.status;
  }
  EXPECT_FALSE((*coordinator)->Ready());
  auto refused = (*coordinator)->Submit(TokenInput{{1, 2}}, {}, [](GenerationChunk) {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);

  // A real worker joins in its place, is told the first worker's block count, and serves.
  std::future<absl::Status> worker = std::async(std::launch::async, [&] {
    WorkerOptions options;
    options.coordinator_address = hub.address;
    options.worker_id = "replacement";
    return RunWorker(options);
  });
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!(*coordinator)->Ready() && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  ASSERT_TRUE((*coordinator)->Ready());
  auto local = Coordinator::Create(Options());
  ASSERT_TRUE(local.ok());
  const std::vector<Outcome> expected = RunAll(**local, 3, 8);
  const std::vector<Outcome> got = RunAll(**coordinator, 3, 8);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, expected[i].tokens);
  }
  (*coordinator)->Shutdown();
  hub.hub->Shutdown();
  ASSERT_EQ(worker.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(worker.get().ok());
}

TEST(WorkerHubTest, RefusesWrongVersionSecondWorkerAndOtherModels) {
  Hub hub;
  {
    FakeWorker old(hub.address, kWorkerProtocolVersion + 1);
    wire::CoordinatorMessage m = old.Read();
    ASSERT_TRUE(m.has_reject());
    EXPECT_EQ(m.reject().status().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
    EXPECT_NE(m.reject().status().message().find("protocol_version"), std::string::npos);
  }
  FakeWorker first(hub.address);
  ASSERT_TRUE(first.Read().has_assignment());
  FakeWorker second(hub.address);
  wire::CoordinatorMessage m = second.Read();
  ASSERT_TRUE(m.has_reject());
  EXPECT_EQ(m.reject().status().code(), static_cast<int>(absl::StatusCode::kAlreadyExists));

  // A worker that loaded another model: refused when it says Ready.
  first.stream->WritesDone();
  first.stream->Finish();
  FakeWorker other(hub.address);
  ASSERT_TRUE(other.Read().has_assignment());
  wire::WorkerMessage ready;
  ready.mutable_ready()->set_num_kv_blocks(64);
  ready.mutable_ready()->set_vocab_size(7);
  ready.mutable_ready()->set_block_size(4);
  ASSERT_TRUE(other.stream->Write(ready));
  wire::CoordinatorMessage ignored;
  EXPECT_FALSE(other.stream->Read(&ignored));
  grpc::Status end = other.stream->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(end.error_message().find("vocab 7"), std::string::npos) << end.error_message();
  EXPECT_FALSE(hub.hub->Health().ok());
}

TEST(WorkerHubTest, RefusesAWorkerThatRotatesItsKeysOtherwise) {
  // The coordinator asks for the f32 default (no rotation); a worker whose cached keys are
  // Hadamard-rotated would answer every query against keys of the other convention.
  Hub hub;
  FakeWorker fake(hub.address);
  ASSERT_TRUE(fake.Read().has_assignment());
  fake.SendReady(64, wire::KV_ROTATION_HADAMARD);
  wire::CoordinatorMessage ignored;
  EXPECT_FALSE(fake.stream->Read(&ignored));
  grpc::Status end = fake.stream->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(end.error_message().find("rotates its cached keys by hadamard; expected none"),
            std::string::npos)
      << end.error_message();
}

// The coordinator asks for the bf16 head (the default); a worker that quantized its head would
// sample from other logits than the coordinator's configuration says.
TEST(WorkerHubTest, RefusesAWorkerWhoseLmHeadDiffers) {
  Hub hub;
  FakeWorker fake(hub.address);
  const wire::CoordinatorMessage assignment = fake.Read();
  ASSERT_TRUE(assignment.has_assignment());
  EXPECT_EQ(assignment.assignment().shard().lm_head_dtype(), wire::LM_HEAD_DTYPE_BF16);
  fake.SendReady(64, wire::KV_ROTATION_NONE, wire::LM_HEAD_DTYPE_INT8);
  wire::CoordinatorMessage ignored;
  EXPECT_FALSE(fake.stream->Read(&ignored));
  grpc::Status end = fake.stream->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(end.error_message().find("its LM head is int8; expected bf16"), std::string::npos)
      << end.error_message();
}

// A loopback TCP socket bound to a free port: listening, it accepts every connection and closes
// it at once (what a TLS coordinator does to a worker it refuses); not listening, it refuses them.
struct ClosingSocket {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int port = 0;
  std::thread acceptor;

  explicit ClosingSocket(bool listening) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof(a);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), n), 0);
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n), 0);
    port = ntohs(a.sin_port);
    if (!listening) return;
    EXPECT_EQ(listen(fd, 8), 0);
    acceptor = std::thread([this] {
      for (int c; (c = accept(fd, nullptr, nullptr)) >= 0;) close(c);
    });
  }
  ~ClosingSocket() {
    shutdown(fd, SHUT_RDWR);  // ends accept()
    if (acceptor.joinable()) acceptor.join();
    close(fd);
  }
};

TEST(WorkerHubTest, WorkerThatCannotConnectSaysWhy) {
  auto run = [](int port) {
    WorkerOptions options;
    options.coordinator_address = "127.0.0.1:" + std::to_string(port);
    options.connect_timeout = milliseconds(1000);
    return RunWorker(options);
  };
  const absl::Status refused = run(ClosingSocket(false).port);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("cannot reach the coordinator"), std::string::npos) << refused;
  EXPECT_NE(refused.message().find("Connection refused"), std::string::npos) << refused;
  ClosingSocket closing(true);
  const absl::Status closed = run(closing.port);
  EXPECT_EQ(closed.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(closed.message().find("as it does when its TLS handshake refuses this worker"),
            std::string::npos)
      << closed;
}

wire::DeviceInfo Device(const std::string& kind, const std::string& host, const std::string& bus) {
  wire::DeviceInfo d;
  d.set_kind(kind);
  d.set_hostname(host);
  d.set_pci_bus_id(bus);
  return d;
}

// Two stages register; returns their first messages.
std::pair<wire::CoordinatorMessage, wire::CoordinatorMessage> FormPipeline(
    Hub& hub, const wire::DeviceInfo& a, const wire::DeviceInfo& b) {
  FakeWorker first(hub.address, kWorkerProtocolVersion, a);
  FakeWorker second(hub.address, kWorkerProtocolVersion, b);
  auto m0 = first.Read();
  auto m1 = second.Read();
  hub.hub->Shutdown();
  return {m0, m1};
}

// --pipeline-split: the two stages are assigned exactly the counts' layers; a split that does not
// add up to the model is refused at Create, naming the model.
TEST(WorkerHubTest, AssignsTheLayersOfAnExplicitSplit) {
  auto config = LoadModelConfig(Model());
  ASSERT_TRUE(config.ok());
  const int n = config->num_hidden_layers;
  ASSERT_GE(n, 2);
  Hub hub(64, milliseconds(600), 2, PipelineTransport::kAuto, {n - 1, 1});
  const auto cpu = Device("cpu", "node-a", "");
  auto [m0, m1] = FormPipeline(hub, cpu, cpu);
  ASSERT_TRUE(m0.has_assignment() && m1.has_assignment());
  const bool swapped = m0.assignment().shard().pipeline_stage() == 1;
  const wire::ModelShard& s0 = (swapped ? m1 : m0).assignment().shard();
  const wire::ModelShard& s1 = (swapped ? m0 : m1).assignment().shard();
  EXPECT_EQ(s0.pipeline_stage(), 0);
  EXPECT_EQ(s0.layer_begin(), 0);
  EXPECT_EQ(s0.layer_end(), n - 1);
  EXPECT_EQ(s1.layer_begin(), n - 1);
  EXPECT_EQ(s1.layer_end(), n);

  WorkerHubOptions options;
  options.model_dir = Model();
  options.num_stages = 2;
  options.pipeline_split = {n, 1};
  const absl::Status bad = WorkerHub::Create(options).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("summing to the model's"), std::string::npos) << bad;
  EXPECT_NE(bad.message().find(Model().string()), std::string::npos) << bad;
}

// NCCL when every stage is a CUDA worker on a GPU of its own (a fresh 128-byte unique id, the same
// for every rank), TCP for CPU workers and for stages sharing a GPU (which then split its memory),
// and what --pp-transport forces.
TEST(WorkerHubTest, PipelineTransportFollowsTheWorkersDevices) {
  const auto gpu0 = Device("cuda", "node-a", "0000:19:00.0");
  const auto gpu1 = Device("cuda", "node-a", "0000:3b:00.0");
  const auto gpu0_other_node = Device("cuda", "node-b", "0000:19:00.0");
  const auto cpu = Device("cpu", "node-a", "");
  {
    Hub hub(64, milliseconds(600), 2);
    auto [m0, m1] = FormPipeline(hub, gpu0, gpu1);
    ASSERT_TRUE(m0.has_assignment() && m1.has_assignment());
    const auto& t0 = m0.assignment().transport();
    const auto& t1 = m1.assignment().transport();
#if BITSERVE_WITH_NCCL
    ASSERT_TRUE(t0.has_nccl() && t1.has_nccl());
    EXPECT_EQ(t0.nccl().unique_id().size(), 128u);
    EXPECT_EQ(t0.nccl().unique_id(), t1.nccl().unique_id());
    // Ranks follow the order of registration, which two concurrent workers do not fix.
    EXPECT_EQ(t0.nccl().rank() + t1.nccl().rank(), 1);
    EXPECT_NE(t0.nccl().rank(), t1.nccl().rank());
    EXPECT_EQ(t1.nccl().world_size(), 2);
#else
    EXPECT_TRUE(t0.has_cpu() && t1.has_cpu());  // no NCCL in this build: TCP
#endif
    EXPECT_EQ(t0.activation_dtype(), wire::ACTIVATION_DTYPE_INT8);
    EXPECT_DOUBLE_EQ(m0.assignment().kv_cache().memory_fraction(), 0.9);
  }
  {
    Hub hub(64, milliseconds(600), 2);
    auto [m0, m1] = FormPipeline(hub, gpu0, gpu0_other_node);
#if BITSERVE_WITH_NCCL
    EXPECT_TRUE(m0.assignment().transport().has_nccl());  // same bus id, other node: distinct GPUs
#endif
  }
  for (const auto& [a, b] : {std::pair{gpu0, gpu0}, std::pair{gpu0, cpu}, std::pair{cpu, cpu}}) {
    Hub hub(64, milliseconds(600), 2);
    auto [m0, m1] = FormPipeline(hub, a, b);
    ASSERT_TRUE(m0.has_assignment() && m1.has_assignment());
    ASSERT_TRUE(m0.assignment().transport().has_cpu()) << a.kind() << " + " << b.kind();
    EXPECT_EQ(m0.assignment().transport().cpu().rank() + m1.assignment().transport().cpu().rank(),
              1);
    EXPECT_EQ(m1.assignment().transport().cpu().peer_addresses_size(), 2);
    const bool shared = a.kind() == "cuda" && b.kind() == "cuda";
    EXPECT_DOUBLE_EQ(m0.assignment().kv_cache().memory_fraction(), shared ? 0.45 : 0.9);
  }
  {
    Hub hub(64, milliseconds(600), 2, PipelineTransport::kTcp);
    auto [m0, m1] = FormPipeline(hub, gpu0, gpu1);
    EXPECT_TRUE(m0.assignment().transport().has_cpu());
  }
#if BITSERVE_WITH_NCCL
  {
    Hub hub(64, milliseconds(600), 2, PipelineTransport::kNccl);
    FakeWorker worker(hub.address, kWorkerProtocolVersion, cpu);
    wire::CoordinatorMessage m = worker.Read();
    ASSERT_TRUE(m.has_reject());
    EXPECT_EQ(m.reject().status().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
    EXPECT_NE(m.reject().status().message().find("NCCL"), std::string::npos)
        << m.reject().status().message();
  }
#endif
  EXPECT_EQ(ParsePipelineTransport("ib").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParsePipelineTransport("nccl"), PipelineTransport::kNccl);
}

}  // namespace
}  // namespace bitserve::rpc

namespace bitserve::rpc {
namespace {

TEST(WorkerHubTest, ExpertParallelismIsRefusedWhereItCannotSplit) {
  WorkerHubOptions options;
  options.expert_parallel = 2;
  options.model_dir = Model();  // test-gqa: dense
  auto dense = WorkerHub::Create(options);
  EXPECT_EQ(dense.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dense.status().message().find("--expert-parallel 2"), std::string::npos)
      << dense.status();
  EXPECT_NE(dense.status().message().find("dense"), std::string::npos) << dense.status();
  options.model_dir = "models/shakespeare-moe";  // 8 experts
  options.expert_parallel = 3;
  auto uneven = WorkerHub::Create(options);
  EXPECT_EQ(uneven.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(uneven.status().message().find("does not divide the model's 8 experts"),
            std::string::npos)
      << uneven.status();
  // NCCL carries expert parallelism too (GPU workers); a build without NCCL says so.
  options.expert_parallel = 2;
  options.pp_transport = PipelineTransport::kNccl;
#if BITSERVE_WITH_NCCL
  EXPECT_TRUE(WorkerHub::Create(options).ok());
#else
  EXPECT_EQ(WorkerHub::Create(options).status().code(), absl::StatusCode::kUnimplemented);
#endif
  options.pp_transport = PipelineTransport::kAuto;
  auto hub = WorkerHub::Create(options);
  EXPECT_TRUE(hub.ok()) << hub.status();
}

}  // namespace
}  // namespace bitserve::rpc
