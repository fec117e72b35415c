// The gRPC server of `bitserve serve`: bitserve.v1.Generation over a GenerationBackend, the
// standard grpc.health.v1 health service and server reflection (so grpcurl and friends need no
// .proto files).
//
// Health: service "" is SERVING while the process is up (liveness); "bitserve.v1.Generation" is
// SERVING only while SetReady(true) holds (readiness: NOT_SERVING while starting, draining, or
// with workers lost). Shutdown turns both NOT_SERVING. The same two statuses can also be served on
// a second, plaintext port that carries nothing but grpc.health.v1 (`health_listen_address`): the
// kubelet's gRPC probes speak no TLS, so an API port with TLS or mutual TLS needs one to be probed.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "rpc/generation_backend.h"
#include "rpc/generation_service.h"

namespace bitserve::rpc {

// The full name of the public service, as health checks and reflection know it.
inline constexpr char kGenerationServiceName[] = "bitserve.v1.Generation";

struct GrpcServerOptions {
  std::string listen_address = "0.0.0.0:50051";  // host:port; port 0 picks a free one
  // Largest request/response message: long-context prompts as text or token ids exceed gRPC's
  // default of 4 MiB.
  int max_message_bytes = 64 << 20;
  bool reflection = true;
  GenerationServiceOptions service;
  // TLS (rpc/tls.h GrpcServerCredentials); null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // host:port of the plaintext health-only server (port 0: any free one); none when empty.
  std::string health_listen_address;
};

class GrpcServer {
 public:
  // Binds and starts serving. `backend` is not owned and must outlive the server. Readiness starts
  // NOT_SERVING. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(GenerationBackend* backend,
                                                           const GrpcServerOptions& options);
  ~GrpcServer();  // Shutdown(now) if not done

  // host:port actually bound (the chosen port when the listen address asked for port 0).
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // host:port of the health-only server; empty without one.
  const std::string& health_address() const { return health_address_; }

  void SetReady(bool ready);

  // Stops accepting calls; calls in flight may finish until `deadline`, then are cancelled (a
  // streaming handler notices within poll_interval and cancels its backend request). Health turns
  // NOT_SERVING. Idempotent.
  void Shutdown(std::chrono::system_clock::time_point deadline);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  GrpcServer() = default;
  // The API server's health service, and the health-only server's where there is one.
  std::vector<grpc::HealthCheckServiceInterface*> HealthServices();

  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // null without a health_listen_address
  std::string address_, health_address_;
  int port_ = 0;
  std::mutex mu_;
  bool shut_down_ = false;
};

}  // namespace bitserve::rpc
