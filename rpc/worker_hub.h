// The coordinator's end of the internal worker protocol (rpc/proto/bitserve/internal/worker.proto):
// the `Attach` service workers dial, their registration, assignment and heartbeats, and the Engine
// the coordinator drives that runs each step on the attached worker (`bitserve serve
// --worker-listen ADDR` + `bitserve worker --coordinator ADDR`). In three files: membership
// (worker_hub.cc: registration, heartbeats, losses, health), pipeline assignment
// (pipeline_assignment.cc: transport, shards, the check of a worker's Ready) and the remote engine
// (remote_engine.cc); worker_link.h is the attached worker they share.
//
// Pipeline: num_stages workers form one pipeline. The first num_stages workers to register are
// held until all have registered, then each is assigned a stage (layers balanced by
// BalanceStages, in order of registration) and its transport: NCCL when every stage is a CUDA
// worker on a GPU of its own (the hub makes a fresh ncclUniqueId for each pipeline it forms and
// sends it with every rank), the TCP transport's peer addresses otherwise (CPU workers, or stages
// sharing a GPU, which NCCL cannot rank twice); pp_transport forces either. Serving starts
// when every stage is ready. Every step plan goes to every stage; the last one answers with the
// sampled tokens, the others with an empty acknowledgement. A worker that registers while the
// pipeline is complete is refused.
//
// Expert parallelism (expert_parallel = E > 1, MoE models; CPU workers over TCP, GPU workers over
// NCCL or TCP): each stage is a group of E workers (slot = stage * E + rank, in registration
// order), each holding the stage's dense weights and the experts the placement
// (scheduler/expert_placement.h) gives its rank, all of them connected by one transport (one NCCL
// communicator, or TCP). Every step plan is split by rank: a sequence
// runs on the rank whose KV pool holds its blocks (the engine's block ids are E pools, one per
// rank, num_kv_pools), and every rank of every stage gets its part each step, possibly empty,
// since the group steps in lockstep. The last stage's ranks each answer with their sequences'
// tokens. A lost rank is a lost stage: the whole pipeline is rebuilt.
//
// Losing a worker: a broken stream, a WorkerFailure message, or no heartbeat within
// heartbeat_timeout. The step waiting on it (and every later step until the pipeline is whole
// again) fails UNAVAILABLE naming the worker and why; Health() is UNAVAILABLE meanwhile. The
// other stages are told to register again (Shutdown with rejoin), so that the pipeline and its
// transport are rebuilt around a replacement. The KV cache died with the pipeline, so the first
// step after it is whole again also fails UNAVAILABLE, once, telling the coordinator to drop the
// sequences it still believed cached (Coordinator does exactly that on any UNAVAILABLE step).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bitserve/internal/worker.grpc.pb.h"
#include "grpcpp/server_builder.h"
#include "rpc/serving_metrics.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/checkpoint/pipeline_stage.h"
#include "runtime/engine/engine.h"

namespace bitserve::rpc {

// How a pipeline's stages reach each other. kNccl refuses CPU workers; kTcp also serves CUDA
// stages (their messages go through host memory).
enum class PipelineTransport { kAuto, kNccl, kTcp };
absl::StatusOr<PipelineTransport> ParsePipelineTransport(absl::string_view name);  // auto|nccl|tcp

struct WorkerHubOptions {
  std::filesystem::path model_dir;  // sent to workers; they may override it with their own path
  // Sizing sent in each Assignment: block_size, num_kv_blocks (0: the first worker decides by its
  // memory; replacements must then allocate exactly as many), max_model_len (0: the model's),
  // max_batch_tokens, kv_memory_fraction. `device` is the worker's own choice.
  EngineOptions engine;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{3000};
  int num_stages = 1;  // pipeline stages
  // Layers per stage (StagesFromSplit); empty: BalanceStages (decode bytes).
  std::vector<int> pipeline_split;
  // Workers of each stage's expert-parallel group (1: none); the pipeline then has
  // num_stages * expert_parallel workers (DESIGN.md "Parallelism").
  int expert_parallel = 1;
  TransferDtype pp_transfer = TransferDtype::kInt8;  // hidden states between stages
  // Expert parallelism: how expert results travel back (f32: the single engine's bits; bf16).
  ExpertResultDtype expert_results = ExpertResultDtype::kF32;
  PipelineTransport pp_transport = PipelineTransport::kAuto;
  ServingMetrics* metrics = nullptr;  // optional: per-stage step times, steps in flight
  // Non-empty: a worker must send it (metadata "authorization: Bearer SECRET") before it gets
  // an assignment (and the model path and NCCL id with it); else UNAUTHENTICATED.
  std::string join_secret;
};

class WorkerHub final : public ::bitserve::internal::v1::Coordinator::Service {
 public:
  // Reads the model's config.json (to check what workers load). Register the hub with a gRPC
  // server (grpc::ServerBuilder::RegisterService) to accept workers.
  static absl::StatusOr<std::unique_ptr<WorkerHub>> Create(const WorkerHubOptions& options);
  ~WorkerHub() override;  // Shutdown()

  ::grpc::Status Attach(
      ::grpc::ServerContext* context,
      ::grpc::ServerReaderWriter<::bitserve::internal::v1::CoordinatorMessage,
                                 ::bitserve::internal::v1::WorkerMessage>* stream) override;

  // Settings of the gRPC server the hub is registered with: message sizes, and the workers'
  // keepalive pings (rpc/worker.h) accepted however long the link is idle.
  static void ConfigureServer(::grpc::ServerBuilder& builder);

  // Blocks until a worker is ready: OK, or DEADLINE_EXCEEDED.
  absl::Status WaitForWorker(std::chrono::steady_clock::time_point deadline);

  // The engine whose steps run on the attached worker. Call after WaitForWorker succeeded once
  // (its limits are the first worker's); it must not outlive the hub.
  std::unique_ptr<Engine> MakeEngine();

  // OK while every stage's worker is attached and ready.
  absl::Status Health() const;
  // Times the pipeline became whole since the hub started (a rebuilt one counts again).
  int pipelines_ready() const;

  // The workers lost since the last call because they fell silent past the heartbeat timeout
  // (hung: stopped, deadlocked, stuck in a driver call) while their stream stayed open. The hub
  // has fenced them (their stream is cancelled, late messages are ignored); `bitserve serve`
  // kills the local worker processes among them, so that fresh ones take their place. (Workers
  // lost otherwise, dead or failed, exit by themselves.)
  struct HungWorker {
    std::string worker_id;
    std::string reason;
  };
  std::vector<HungWorker> TakeHungWorkers();

  // Tells the attached worker to exit, fails a step in flight, refuses new workers. Idempotent.
  void Shutdown();

 private:
  struct Link;
  class RemoteEngine;
  explicit WorkerHub(const WorkerHubOptions& options, ModelConfig config,
                     std::vector<PipelineStage> stages, std::vector<int32_t> expert_owner);
  void Monitor();
  // Under mu_: marks `link` lost and breaks up its pipeline (the others are told to rejoin).
  void MarkLost(Link& link, const std::string& reason);
  void AssignAll();                   // under mu_: the pipeline has all its workers
  bool NcclCanJoin() const;           // under mu_: every stage a CUDA worker on a GPU of its own
  bool Whole() const;                 // under mu_: every stage attached and ready
  int ReadyStages() const;            // under mu_
  absl::Status HealthLocked() const;  // Health() under mu_
  // Under mu_: the Ready of one stage; an error says why it is refused.
  absl::Status AcceptReady(Link& link, const ::bitserve::internal::v1::Ready& ready);

  WorkerHubOptions options_;
  ModelConfig config_;
  std::vector<PipelineStage> stages_;
  std::vector<int32_t> expert_owner_;  // expert parallelism: the rank holding each expert

  mutable std::mutex mu_;
  std::condition_variable changed_;
  int num_workers() const { return options_.num_stages * options_.expert_parallel; }
  // The pipeline being formed or serving, in slot order; its size grows to num_workers().
  std::vector<std::shared_ptr<Link>> pipeline_;
  std::vector<std::shared_ptr<Link>> rejoin_;  // to be told to register again (by Monitor)
  std::string last_loss_;  // why the previous pipeline broke, for Health and step errors
  std::vector<HungWorker> hung_workers_;  // for TakeHungWorkers
  uint64_t epoch_ = 0;                    // increases each time the pipeline becomes whole
  uint64_t next_assignment_ = 1;
  uint64_t next_step_ = 1;
  int pipelines_ready_ = 0;
  bool shutting_down_ = false;
  // The limits of the first pipeline; rebuilt pipelines must match them.
  int num_kv_blocks_ = 0, block_size_ = 0, max_batch_tokens_ = 0;
  int64_t max_model_len_ = 0;
  std::string device_name_;
  std::string pipeline_transport_;  // "nccl" or "tcp": of the pipeline assigned last
  KvDtype kv_dtype_ = KvDtype::kBf16;
  KvRotation kv_rotation_ = KvRotation::kNone;
  std::thread monitor_;
};

}  // namespace bitserve::rpc
