// The public gRPC service bitserve.v1.Generation (docs/api.md) over a GenerationBackend: the
// in-process Coordinator, or anything else that implements the interface (tests use a fake).
//
// Requests arrive as raw bytes and are parsed here (rpc/request_bytes.h), so that malformed
// protobuf or invalid UTF-8 is INVALID_ARGUMENT naming the field (gRPC's own deserializer would
// answer INTERNAL with no message), logged at most once a second.
//
// Generate runs on a thread of the synchronous server for the whole stream. The backend hands
// chunks to a queue from its own thread; the handler thread takes them off and writes them, and
// between chunks it wakes every poll_interval to check the client: a cancelled call or a passed
// deadline cancels the backend request, so its sequence is freed at the backend's next iteration.
#pragma once

#include <chrono>
#include <functional>

#include "bitserve/v1/bitserve.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "rpc/api_conversion.h"
#include "rpc/api_keys.h"
#include "rpc/generation_backend.h"
#include "rpc/log_throttle.h"
#include "rpc/serving_metrics.h"

namespace bitserve::rpc {

struct GenerationServiceOptions {
  // How often a streaming handler checks for client cancellation and its deadline while no chunk
  // arrives: bounds how long a cancelled request keeps its sequence.
  std::chrono::milliseconds poll_interval{20};
  // Optional, not owned: Generate requests refused here (malformed bytes, a bad parameter) are
  // counted as rejected, as the backend counts its own refusals.
  ServingMetrics* metrics = nullptr;
  // Optional, not owned: when it has keys, every call must carry one (metadata
  // "authorization: Bearer KEY"), else UNAUTHENTICATED.
  const ApiKeys* api_keys = nullptr;
};

class GenerationService final : public v1::Generation::Service {
 public:
  // `backend` is not owned and must outlive the service (and the server it is registered with).
  explicit GenerationService(GenerationBackend* backend, GenerationServiceOptions options = {});

 private:
  using RawStream = grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;
  using Write = std::function<bool(const v1::GenerateResponse&)>;

  // OK, or UNAUTHENTICATED when API keys are set and the call carries none of them.
  grpc::Status CheckApiKey(const grpc::ServerContext& context) const;
  // The handlers of the three methods, on raw bytes.
  grpc::Status GenerateBytes(grpc::ServerContext* context, RawStream* stream);
  grpc::Status TokenizeBytes(grpc::ServerContext* context, RawStream* stream);
  grpc::Status ModelInfoBytes(grpc::ServerContext* context, RawStream* stream);

  // Stream status: Submit's error as it is; the backend's final "error" chunk's status;
  // CANCELLED when the client cancels (or the server cancelled the request: the final message is
  // written first, finish_reason CANCELLED); DEADLINE_EXCEEDED when the call's deadline passes.
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest& request,
                        const Write& write);
  // Reads the one request message of a call into `request`; INVALID_ARGUMENT (logged, throttled)
  // when there is none or it does not parse.
  absl::Status ReadRequest(grpc::ServerContext* context, RawStream* stream, const char* method,
                           google::protobuf::Message* request);
  // The response of a unary call, then OK (or INTERNAL when it cannot be serialized).
  static grpc::Status Reply(RawStream* stream, const google::protobuf::Message& response);

  GenerationBackend* backend_;
  GenerationServiceOptions options_;
  LogThrottle malformed_log_;
};

}  // namespace bitserve::rpc
