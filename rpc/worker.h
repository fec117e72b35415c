// The worker end of the internal protocol (rpc/proto/bitserve/internal/worker.proto), as run by
// `bitserve worker --coordinator ADDR`: dial the coordinator, register, load the assigned model
// shard (the whole model, or one pipeline stage's layers) into an engine (runtime/engine.h) on
// this process's device, connect to the other stages (NCCL from the coordinator's unique id,
// runtime/nccl_transport.h, or TCP, runtime/tcp_transport.h, as the assignment says), then run the
// step plans that arrive, heartbeating all along (also while loading).
//
// A pipeline stage receives the previous stage's hidden states for each step, runs its layers and
// sends its own on; only the last stage samples and answers with tokens. Every stage sends exactly
// one message per step to the next (over NCCL in device memory), so that no stage is left waiting:
// over TCP an empty one when its step failed, which fails the step on every later stage; over NCCL
// the full-size one (NCCL carries no sizes) and the coordinator fails the step from the failed
// stage's result.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/security/credentials.h"

namespace bitserve::rpc {

struct WorkerOptions {
  std::string coordinator_address;  // host:port of `bitserve serve --worker-listen`
  std::string device = "cpu";       // cpu, cuda, cuda:N
  std::string model_dir;            // empty: the path the coordinator sends (a shared volume)
  std::string worker_id;            // empty: hostname:pid:device
  // Where the other pipeline stages reach this worker (this host's address as they see it).
  std::string transport_host = "127.0.0.1";
  std::chrono::milliseconds connect_timeout{30000};
  // The coordinator's join secret (`serve --worker-secret-file`), sent when registering.
  std::string join_secret;
  // TLS to the coordinator (`serve --worker-tls-cert`; rpc/tls.h); null: plaintext.
  std::shared_ptr<::grpc::ChannelCredentials> credentials;
};

// Keepalive of the worker's link to the coordinator: a ping after kWorkerKeepaliveTime without
// anything received; the connection ends when a ping, or sent data, goes unacknowledged for
// kWorkerKeepaliveTimeout. The coordinator's worker server accepts such pings
// (WorkerHub::ConfigureServer).
inline constexpr std::chrono::milliseconds kWorkerKeepaliveTime{5000};
inline constexpr std::chrono::milliseconds kWorkerKeepaliveTimeout{5000};

// Runs until the coordinator sends Shutdown (OK), refuses the worker (FAILED_PRECONDITION,
// ALREADY_EXISTS, ... with its reason), goes away (UNAVAILABLE), or loading fails (that error,
// also reported to the coordinator). A Shutdown that asks to rejoin (a peer stage was lost)
// registers again.
absl::Status RunWorker(const WorkerOptions& options);

}  // namespace bitserve::rpc
