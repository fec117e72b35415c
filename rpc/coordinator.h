// The coordinator (DESIGN.md "Processes"): tokenizer, chat template, scheduler, KV block tables,
// detokenizer and stop conditions, driving its workers step by step from one scheduling thread.
// It implements GenerationBackend for the gRPC service and for `bitserve batch --model`.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "rpc/generation_backend.h"
#include "rpc/serving_metrics.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer/tokenizer.h"
#include "scheduler/scheduler.h"

namespace bitserve::rpc {

struct CoordinatorOptions {
  std::filesystem::path model_dir;
  EngineOptions engine;                  // device, KV blocks, block size, max_batch_tokens
  scheduler::SchedulerConfig scheduler;  // num_kv_blocks / block_size are taken from the engine
  ServingMetrics* metrics = nullptr;     // optional, not owned
  bool log_requests = true;              // one structured line per finished request on stderr
};

// What the metrics and ModelInfo report about the running state.
struct CoordinatorState {
  bool ready = false;
  bool draining = false;
  int waiting = 0;
  int running = 0;
  int kv_blocks_used = 0;
  int kv_blocks_free = 0;
};

class Coordinator : public GenerationBackend {
 public:
  // Loads the model and tokenizer and starts the scheduling thread.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options);
  // With an engine made elsewhere (rpc/worker_hub.h: steps run on a remote worker);
  // options.engine is then unused. While engine->Health() fails, the coordinator is not ready and
  // Submit answers UNAVAILABLE with its reason; a step that fails UNAVAILABLE (a worker lost, and
  // the KV cache with it) ends every request in flight with that status.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options,
                                                             std::unique_ptr<Engine> engine);
  ~Coordinator() override;  // Shutdown()

  absl::StatusOr<uint64_t> Submit(GenerationInput input, GenerationParams params,
                                  ChunkCallback on_chunk) override;
  void Cancel(uint64_t id, const absl::Status& why) override;
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text, bool add_special) override;
  absl::StatusOr<ModelSummary> Info() override;

  CoordinatorState State() const;
  bool Ready() const { return State().ready; }

  // Stops accepting (Submit answers UNAVAILABLE "draining"), lets the requests in flight finish
  // until `deadline`, then cancels what is left. Returns once nothing is running. Idempotent.
  void Drain(std::chrono::steady_clock::time_point deadline);
  // Cancels everything still running and stops the scheduling thread.
  void Shutdown();

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitserve::rpc
