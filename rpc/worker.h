// The worker end of the internal protocol (rpc/proto/bitserve/internal/worker.proto), as run by
// `bitserve worker --coordinator ADDR`: dial the coordinator, register, load the assigned model
// shard into an engine (runtime/engine.h) on this process's device, then run the step plans that
// arrive and send back the sampled tokens, heartbeating all along (also while loading).
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"

namespace bitserve::rpc {

struct WorkerOptions {
  std::string coordinator_address;  // host:port of `bitserve serve --worker-listen`
  std::string device = "cpu";       // cpu, cuda, cuda:N
  std::string model_dir;            // empty: the path the coordinator sends (a shared volume)
  std::string worker_id;            // empty: hostname:pid:device
  std::chrono::milliseconds connect_timeout{30000};
};

// Runs until the coordinator sends Shutdown (OK), refuses the worker (FAILED_PRECONDITION,
// ALREADY_EXISTS, ... with its reason), goes away (UNAVAILABLE), or loading fails (that error,
// also reported to the coordinator).
absl::Status RunWorker(const WorkerOptions& options);

}  // namespace bitserve::rpc
