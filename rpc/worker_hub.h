// The coordinator's end of the internal worker protocol (rpc/proto/bitserve/internal/worker.proto):
// the `Attach` service workers dial, their registration, assignment and heartbeats, and the Engine
// the coordinator drives that runs each step on the attached worker (`bitserve serve
// --worker-listen ADDR` + `bitserve worker --coordinator ADDR`).
//
// One worker holds the whole model for now (world_size 1; pipeline stages are the next step). A
// second worker that registers while one is attached is refused; one that registers after the
// first was lost replaces it.
//
// Losing a worker: a broken stream, a WorkerFailure message, or no heartbeat within
// heartbeat_timeout. The step waiting on it (and every later step until a worker is back) fails
// UNAVAILABLE naming the worker and why; Health() is UNAVAILABLE meanwhile. The KV cache died with
// the worker, so the first step after a replacement joined also fails UNAVAILABLE, once, telling
// the coordinator to drop the sequences it still believed cached (Coordinator does exactly that
// on any UNAVAILABLE step).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "bitserve/internal/worker.grpc.pb.h"
#include "runtime/engine.h"
#include "runtime/model_config.h"

namespace bitserve::rpc {

struct WorkerHubOptions {
  std::filesystem::path model_dir;  // sent to workers; they may override it with their own path
  // Sizing sent in each Assignment: block_size, num_kv_blocks (0: the first worker decides by its
  // memory; replacements must then allocate exactly as many), max_model_len (0: the model's),
  // max_batch_tokens, kv_memory_fraction. `device` is the worker's own choice.
  EngineOptions engine;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{3000};
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

  // Blocks until a worker is ready: OK, or DEADLINE_EXCEEDED.
  absl::Status WaitForWorker(std::chrono::steady_clock::time_point deadline);

  // The engine whose steps run on the attached worker. Call after WaitForWorker succeeded once
  // (its limits are the first worker's); it must not outlive the hub.
  std::unique_ptr<Engine> MakeEngine();

  // OK while a worker is attached and ready.
  absl::Status Health() const;
  // Workers that became ready since the hub started (a replacement counts again).
  int workers_joined() const;

  // Tells the attached worker to exit, fails a step in flight, refuses new workers. Idempotent.
  void Shutdown();

 private:
  struct Link;
  class RemoteEngine;
  explicit WorkerHub(const WorkerHubOptions& options, ModelConfig config);
  void Monitor();
  void MarkLost(Link& link, const std::string& reason);  // under mu_

  WorkerHubOptions options_;
  ModelConfig config_;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::shared_ptr<Link> active_;   // the worker that runs steps; null when none
  std::string last_loss_;          // why the previous worker went, for Health and step errors
  uint64_t epoch_ = 0;             // increases with each worker that becomes ready
  uint64_t next_assignment_ = 1;
  uint64_t next_step_ = 1;
  int workers_joined_ = 0;
  bool shutting_down_ = false;
  // The limits of the first worker; replacements must match them.
  int num_kv_blocks_ = 0, block_size_ = 0, max_batch_tokens_ = 0;
  int64_t max_model_len_ = 0;
  std::string device_name_;
  std::thread monitor_;
};

}  // namespace bitserve::rpc
