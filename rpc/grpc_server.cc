#include "rpc/grpc_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace bitserve::rpc {

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(GenerationBackend* backend,
                                                              const GrpcServerOptions& options) {
  // Both are process-wide switches read when a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<GenerationService>(backend, options.service);

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      options.listen_address,
      options.credentials ? options.credentials : grpc::InsecureServerCredentials(), &port);
  // gRPC binds with SO_REUSEPORT by default: a second server on a taken port would then start and
  // silently take half the connections. Refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    server->server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address,
                     " (expected host:port with a free port; port 0 picks one)"));
  }
  server->port_ = port;
  const size_t colon = options.listen_address.rfind(':');
  server->address_ = absl::StrCat(options.listen_address.substr(0, colon), ":", port);

  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kGenerationServiceName, false);
  return server;
}

GrpcServer::~GrpcServer() {
  if (server_ == nullptr) return;  // Start failed
  Shutdown(std::chrono::system_clock::now());
  server_->Wait();
}

void GrpcServer::SetReady(bool ready) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  server_->GetHealthCheckService()->SetServingStatus(kGenerationServiceName, ready);
}

void GrpcServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    // Every service NOT_SERVING, and later updates ignored.
    server_->GetHealthCheckService()->Shutdown();
  }
  server_->Shutdown(deadline);
}

void GrpcServer::Wait() { server_->Wait(); }

}  // namespace bitserve::rpc
