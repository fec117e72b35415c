#include "rpc/generation_service.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <utility>

#include "grpcpp/support/method_handler.h"
#include "rpc/api_conversion.h"
#include "rpc/request_bytes.h"

namespace bitserve::rpc {
namespace {

// Chunks of one request, from the backend's thread to the handler's. Shared with the backend's
// callback, so a handler that returns early (client gone) leaves the callback something to write
// into until the backend delivers its final chunk.
class ChunkQueue {
 public:
  void Push(GenerationChunk chunk) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      chunks_.push_back(std::move(chunk));
    }
    cv_.notify_one();
  }

  // What is queued, after waiting up to `timeout` for something to be.
  std::deque<GenerationChunk> Take(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [this] { return !chunks_.empty(); });
    return std::exchange(chunks_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationChunk> chunks_;
};

// `slack`: a call that gRPC cancelled for its deadline can be seen an instant before the deadline
// by this clock (gRPC times calls on another one).
bool DeadlinePassed(const grpc::ServerContext& context,
                    std::chrono::milliseconds slack = std::chrono::milliseconds(0)) {
  return std::chrono::system_clock::now() + slack >= context.deadline();
}

}  // namespace

GenerationService::GenerationService(GenerationBackend* backend, GenerationServiceOptions options)
    : backend_(backend), options_(options) {
  // The generated service numbers its methods in bitserve.proto's order. Each becomes a handler
  // of raw bytes (gRPC's "streamed" handlers: the request is read, not deserialized, by gRPC).
  using Handler =
      grpc::internal::BidiStreamingHandler<GenerationService, grpc::ByteBuffer, grpc::ByteBuffer>;
  MarkMethodStreamed(0, new Handler(std::mem_fn(&GenerationService::GenerateBytes), this));
  MarkMethodStreamed(1, new Handler(std::mem_fn(&GenerationService::TokenizeBytes), this));
  MarkMethodStreamed(2, new Handler(std::mem_fn(&GenerationService::ModelInfoBytes), this));
}

absl::Status GenerationService::ReadRequest(grpc::ServerContext* context, RawStream* stream,
                                            const char* method,
                                            google::protobuf::Message* request) {
  grpc::ByteBuffer buffer;
  absl::Status status = stream->Read(&buffer)
                            ? ParseRequestBytes(&buffer, request)
                            : absl::InvalidArgumentError("the call carried no request message");
  if (status.ok()) return status;
  int64_t suppressed = 0;
  if (malformed_log_.Allow(&suppressed)) {
    std::cerr << "bitserve: refused a malformed " << method << " request from " << context->peer()
              << ": " << status.message();
    if (suppressed > 0) std::cerr << " (and " << suppressed << " more since the last such line)";
    std::cerr << std::endl;
  }
  return status;
}

grpc::Status GenerationService::Reply(RawStream* stream,
                                      const google::protobuf::Message& response) {
  grpc::ByteBuffer buffer;
  if (absl::Status s = SerializeToBuffer(response, &buffer); !s.ok()) return ToGrpcStatus(s);
  stream->Write(buffer);
  return grpc::Status::OK;
}

grpc::Status GenerationService::CheckApiKey(const grpc::ServerContext& context) const {
  if (options_.api_keys == nullptr || !options_.api_keys->enabled()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  const absl::string_view value = it == metadata.end()
                                      ? absl::string_view()
                                      : absl::string_view(it->second.data(), it->second.size());
  if (options_.api_keys->Allows(value)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(kApiKeyRequired));
}

grpc::Status GenerationService::GenerateBytes(grpc::ServerContext* context, RawStream* stream) {
  if (grpc::Status key = CheckApiKey(*context); !key.ok()) {
    if (options_.metrics) options_.metrics->RequestRejected("UNAUTHENTICATED");
    return key;
  }
  v1::GenerateRequest request;
  if (absl::Status s = ReadRequest(context, stream, "Generate", &request); !s.ok()) {
    if (options_.metrics) options_.metrics->RequestRejected(absl::StatusCodeToString(s.code()));
    return ToGrpcStatus(s);
  }
  return Generate(context, request, [stream](const v1::GenerateResponse& response) {
    grpc::ByteBuffer buffer;
    return SerializeToBuffer(response, &buffer).ok() && stream->Write(buffer);
  });
}

grpc::Status GenerationService::Generate(grpc::ServerContext* context,
                                         const v1::GenerateRequest& request, const Write& write) {
  GenerationInput input;
  GenerationParams params;
  if (absl::Status s = ParseGenerateRequest(request, &input, &params); !s.ok()) {
    if (options_.metrics) options_.metrics->RequestRejected(absl::StatusCodeToString(s.code()));
    return ToGrpcStatus(s);
  }
  auto queue = std::make_shared<ChunkQueue>();
  absl::StatusOr<uint64_t> id =
      backend_->Submit(std::move(input), std::move(params),
                       [queue](GenerationChunk chunk) { queue->Push(std::move(chunk)); });
  if (!id.ok()) return ToGrpcStatus(id.status());

  const std::string& request_id = request.request_id();
  while (true) {
    for (GenerationChunk& chunk : queue->Take(options_.poll_interval)) {
      if (chunk.final && chunk.finish_reason == "error") {
        // Tokens that came with the error still reach the client; the status ends the stream.
        if (!chunk.token_ids.empty() || !chunk.text.empty()) {
          write(ToGenerateResponse(chunk, request_id));
        }
        if (chunk.status.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "generation failed");
        return ToGrpcStatus(chunk.status);
      }
      const bool written = write(ToGenerateResponse(chunk, request_id));
      if (chunk.final) {
        if (chunk.finish_reason == "cancelled") {
          if (DeadlinePassed(*context)) {
            return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
          }
          return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled by the server");
        }
        return grpc::Status::OK;
      }
      if (!written) {  // the stream is gone: the client cancelled or disconnected, or the deadline
                       // passed
        if (DeadlinePassed(*context, std::chrono::milliseconds(100))) {
          backend_->Cancel(*id, absl::DeadlineExceededError("the call's deadline passed"));
          return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
        }
        backend_->Cancel(*id, absl::CancelledError("the client went away"));
        return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      }
    }
    if (DeadlinePassed(*context)) {
      backend_->Cancel(*id, absl::DeadlineExceededError("the call's deadline passed"));
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
    }
    if (context->IsCancelled()) {
      if (DeadlinePassed(*context, std::chrono::milliseconds(100))) {
        backend_->Cancel(*id, absl::DeadlineExceededError("the call's deadline passed"));
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
      }
      backend_->Cancel(*id, absl::CancelledError("cancelled by the client"));
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
  }
}

grpc::Status GenerationService::TokenizeBytes(grpc::ServerContext* context, RawStream* stream) {
  if (grpc::Status key = CheckApiKey(*context); !key.ok()) return key;
  v1::TokenizeRequest request;
  if (absl::Status s = ReadRequest(context, stream, "Tokenize", &request); !s.ok())
    return ToGrpcStatus(s);
  absl::StatusOr<std::vector<int32_t>> ids =
      backend_->Tokenize(request.text(), request.add_special_tokens());
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  v1::TokenizeResponse response;
  response.mutable_token_ids()->Add(ids->begin(), ids->end());
  return Reply(stream, response);
}

grpc::Status GenerationService::ModelInfoBytes(grpc::ServerContext* context, RawStream* stream) {
  if (grpc::Status key = CheckApiKey(*context); !key.ok()) return key;
  v1::ModelInfoRequest request;
  if (absl::Status s = ReadRequest(context, stream, "ModelInfo", &request); !s.ok())
    return ToGrpcStatus(s);
  absl::StatusOr<ModelSummary> summary = backend_->Info();
  if (!summary.ok()) return ToGrpcStatus(summary.status());
  v1::ModelInfoResponse response;
  ToModelInfoResponse(*summary, &response);
  return Reply(stream, response);
}

}  // namespace bitserve::rpc
