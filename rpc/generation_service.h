// The public gRPC service bitserve.v1.Generation (docs/api.md) over a GenerationBackend: the
// in-process Coordinator, or anything else that implements the interface (tests use a fake).
//
// Generate runs on a thread of the synchronous server for the whole stream. The backend hands
// chunks to a queue from its own thread; the handler thread takes them off and writes them, and
// between chunks it wakes every poll_interval to check the client: a cancelled call or a passed
// deadline cancels the backend request, so its sequence is freed at the backend's next iteration.
#pragma once

#include <chrono>

#include "bitserve/v1/bitserve.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "rpc/api_conversion.h"
#include "rpc/generation_backend.h"

namespace bitserve::rpc {

struct GenerationServiceOptions {
  // How often a streaming handler checks for client cancellation and its deadline while no chunk
  // arrives: bounds how long a cancelled request keeps its sequence.
  std::chrono::milliseconds poll_interval{20};
};

class GenerationService final : public v1::Generation::Service {
 public:
  // `backend` is not owned and must outlive the service (and the server it is registered with).
  explicit GenerationService(GenerationBackend* backend, GenerationServiceOptions options = {});

  // Stream status: Submit's error as it is; the backend's final "error" chunk's status;
  // CANCELLED when the client cancels (or the server cancelled the request: the final message is
  // written first, finish_reason CANCELLED); DEADLINE_EXCEEDED when the call's deadline passes.
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status ModelInfo(grpc::ServerContext* context, const v1::ModelInfoRequest* request,
                         v1::ModelInfoResponse* response) override;

 private:
  GenerationBackend* backend_;
  GenerationServiceOptions options_;
};

}  // namespace bitserve::rpc
