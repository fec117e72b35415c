// One worker attached to the WorkerHub (rpc/worker_hub.h), as the hub's three parts share it:
// membership (worker_hub.cc), pipeline assignment (pipeline_assignment.cc) and the remote engine
// (remote_engine.cc). Internal to the hub.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "bitserve/internal/worker.grpc.pb.h"
#include "kernels/kv_cache_format.h"
#include "rpc/worker_hub.h"
#include "rpc/worker_protocol.h"

namespace bitserve::rpc {

using WorkerLinkClock = std::chrono::steady_clock;
using WorkerStream = ::grpc::ServerReaderWriter<wire::CoordinatorMessage, wire::WorkerMessage>;

// One attached worker. The Attach handler owns the stream; other threads write to it under
// write_mu while `closed` is false (the handler sets it before returning). The rest is guarded by
// the hub's mu_.
struct WorkerHub::Link {
  std::string worker_id;
  std::string transport_address;
  std::string device_kind, hostname, pci_bus_id;  // from Register.device
  ::grpc::ServerContext* context = nullptr;
  WorkerStream* stream = nullptr;
  std::mutex write_mu;
  bool closed = false;  // under write_mu

  int slot = 0;  // place in the pipeline: stage * expert_parallel + ep_rank
  int stage = 0, ep_rank = 0;
  int num_stages = 1, expert_parallel = 1;
  bool assigned = false;  // the Assignment below is decided (and then sent)
  wire::CoordinatorMessage assignment;
  WorkerLinkClock::time_point last_heard;
  bool ready = false;
  int num_kv_blocks = 0, max_batch_tokens = 0;
  int64_t max_model_len = 0;
  KvDtype kv_dtype = KvDtype::kBf16;
  KvRotation kv_rotation = KvRotation::kNone;
  std::string device;
  bool lost = false;
  bool lost_by_peer = false;  // lost only because another stage of its pipeline was
  std::string lost_reason;
  std::map<uint64_t, wire::StepResult> results;  // by step id, until FinishStep takes them

  // Its place in the pipeline: `slot` of num_stages * expert_parallel.
  void Place(int slot_, int num_stages_, int expert_parallel_) {
    slot = slot_;
    num_stages = num_stages_;
    expert_parallel = expert_parallel_;
    stage = slot / expert_parallel;
    ep_rank = slot % expert_parallel;
  }
  // The worker id with its place: "w (stage 1)", "w (EP rank 1)", "w (stage 1, EP rank 0)".
  std::string Name() const {
    if (num_stages == 1 && expert_parallel == 1) return worker_id;
    if (expert_parallel == 1) return absl::StrCat(worker_id, " (stage ", stage, ")");
    if (num_stages == 1) return absl::StrCat(worker_id, " (EP rank ", ep_rank, ")");
    return absl::StrCat(worker_id, " (stage ", stage, ", EP rank ", ep_rank, ")");
  }
  // False when the stream is closed or broken.
  bool Write(const wire::CoordinatorMessage& message) {
    std::lock_guard<std::mutex> lock(write_mu);
    return !closed && stream->Write(message);
  }
  // The "register again" shutdown, at most once: the hub's monitor and the link's own handler
  // may both send it, and a worker reads nothing after the first (a second, unread, would keep
  // its stream from finishing).
  bool WriteRejoin(const wire::CoordinatorMessage& message) {
    std::lock_guard<std::mutex> lock(write_mu);
    if (closed || rejoin_sent) return false;
    rejoin_sent = true;
    return stream->Write(message);
  }
  bool rejoin_sent = false;  // guarded by write_mu
};

}  // namespace bitserve::rpc
