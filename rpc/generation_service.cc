#include "rpc/generation_service.h"

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>

#include "rpc/api_conversion.h"

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

bool DeadlinePassed(const grpc::ServerContext& context) {
  return std::chrono::system_clock::now() >= context.deadline();
}

}  // namespace

GenerationService::GenerationService(GenerationBackend* backend, GenerationServiceOptions options)
    : backend_(backend), options_(options) {}

grpc::Status GenerationService::Generate(grpc::ServerContext* context,
                                         const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  GenerationInput input;
  GenerationParams params;
  if (absl::Status s = ParseGenerateRequest(*request, &input, &params); !s.ok()) {
    return ToGrpcStatus(s);
  }
  auto queue = std::make_shared<ChunkQueue>();
  absl::StatusOr<uint64_t> id =
      backend_->Submit(std::move(input), std::move(params),
                       [queue](GenerationChunk chunk) { queue->Push(std::move(chunk)); });
  if (!id.ok()) return ToGrpcStatus(id.status());

  const std::string& request_id = request->request_id();
  while (true) {
    for (GenerationChunk& chunk : queue->Take(options_.poll_interval)) {
      if (chunk.final && chunk.finish_reason == "error") {
        // Tokens that came with the error still reach the client; the status ends the stream.
        if (!chunk.token_ids.empty() || !chunk.text.empty()) {
          writer->Write(ToGenerateResponse(chunk, request_id));
        }
        if (chunk.status.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "generation failed");
        return ToGrpcStatus(chunk.status);
      }
      const bool written = writer->Write(ToGenerateResponse(chunk, request_id));
      if (chunk.final) {
        if (chunk.finish_reason == "cancelled") {
          if (DeadlinePassed(*context)) {
            return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
          }
          return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled by the server");
        }
        return grpc::Status::OK;
      }
      if (!written) {  // the stream is gone: the client cancelled or disconnected
        backend_->Cancel(*id);
        return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      }
    }
    if (DeadlinePassed(*context)) {
      backend_->Cancel(*id);
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
    }
    if (context->IsCancelled()) {
      backend_->Cancel(*id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
  }
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext* context,
                                         const v1::TokenizeRequest* request,
                                         v1::TokenizeResponse* response) {
  absl::StatusOr<std::vector<int32_t>> ids =
      backend_->Tokenize(request->text(), request->add_special_tokens());
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  return grpc::Status::OK;
}

grpc::Status GenerationService::ModelInfo(grpc::ServerContext* context,
                                          const v1::ModelInfoRequest* request,
                                          v1::ModelInfoResponse* response) {
  absl::StatusOr<ModelSummary> summary = backend_->Info();
  if (!summary.ok()) return ToGrpcStatus(summary.status());
  ToModelInfoResponse(*summary, response);
  return grpc::Status::OK;
}

}  // namespace bitserve::rpc
