#include "rpc/grpc_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace bitserve::rpc {
namespace {

// Binds `builder` to `address`, refusing a port another server holds; the bound port is written to
// *port once the server starts.
void Listen(grpc::ServerBuilder& builder, const std::string& address,
            const std::shared_ptr<grpc::ServerCredentials>& credentials, int* port) {
  builder.AddListeningPort(address, credentials ? credentials : grpc::InsecureServerCredentials(),
                           port);
  // gRPC binds with SO_REUSEPORT by default: a second server on a taken port would then start and
  // silently take half the connections. Refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
}

absl::Status CannotListen(const std::string& address, const char* what) {
  return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " (", what,
                                             ": expected host:port with a free port; port 0 "
                                             "picks one)"));
}

// host:port with the port actually bound.
std::string BoundAddress(const std::string& listen, int port) {
  return absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(GenerationBackend* backend,
                                                              const GrpcServerOptions& options) {
  // Both are process-wide switches read when a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<GenerationService>(backend, options.service);

  grpc::ServerBuilder builder;
  int port = 0;
  Listen(builder, options.listen_address, options.credentials, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    server->server_.reset();
    return CannotListen(options.listen_address, "the gRPC API");
  }
  server->port_ = port;
  server->address_ = BoundAddress(options.listen_address, port);

  if (!options.health_listen_address.empty()) {
    // No service of its own: the builder adds the default health service, nothing else.
    grpc::ServerBuilder health_builder;
    int health_port = 0;
    Listen(health_builder, options.health_listen_address, nullptr, &health_port);
    server->health_server_ = health_builder.BuildAndStart();
    if (server->health_server_ == nullptr || health_port == 0) {
      if (server->health_server_ != nullptr) server->health_server_->Shutdown();
      server->health_server_.reset();
      return CannotListen(options.health_listen_address, "the health port");
    }
    server->health_address_ = BoundAddress(options.health_listen_address, health_port);
  }
  for (grpc::HealthCheckServiceInterface* health : server->HealthServices()) {
    health->SetServingStatus("", true);
    health->SetServingStatus(kGenerationServiceName, false);
  }
  return server;
}

std::vector<grpc::HealthCheckServiceInterface*> GrpcServer::HealthServices() {
  std::vector<grpc::HealthCheckServiceInterface*> services = {server_->GetHealthCheckService()};
  if (health_server_) services.push_back(health_server_->GetHealthCheckService());
  return services;
}

GrpcServer::~GrpcServer() {
  if (server_ == nullptr) return;  // Start failed
  Shutdown(std::chrono::system_clock::now());
  Wait();
}

void GrpcServer::SetReady(bool ready) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  for (grpc::HealthCheckServiceInterface* health : HealthServices()) {
    health->SetServingStatus(kGenerationServiceName, ready);
  }
}

void GrpcServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    // Every service NOT_SERVING, and later updates ignored.
    for (grpc::HealthCheckServiceInterface* health : HealthServices()) health->Shutdown();
  }
  server_->Shutdown(deadline);
  if (health_server_) health_server_->Shutdown(deadline);
}

void GrpcServer::Wait() {
  server_->Wait();
  if (health_server_) health_server_->Wait();
}

}  // namespace bitserve::rpc
