#include "rpc/client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "rpc/api_conversion.h"

namespace bitserve::rpc {

// One Generate call. It keeps a hold on the call from start until the read stream has ended, so
// that the call (and its grpc_call, which TryCancel touches) cannot finish while Cancel may run:
// Cancel acts only under mu_ and before released_, and the hold is released right after
// released_ is set. gRPC never runs reactions inline from TryCancel, so holding mu_ is safe.
class RemoteBackend::GenerateCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(RemoteBackend* owner, uint64_t id, v1::GenerateRequest request,
               ChunkCallback on_chunk)
      : owner_(owner), id_(id), request_(std::move(request)), on_chunk_(std::move(on_chunk)) {}

  void Start() {
    if (owner_->options_.request_timeout.count() > 0) {
      context_.set_deadline(std::chrono::system_clock::now() + owner_->options_.request_timeout);
    }
    if (!owner_->options_.api_key.empty()) {
      context_.AddMetadata("authorization", "Bearer " + owner_->options_.api_key);
    }
    owner_->stub_->async()->Generate(&context_, &request_, this);
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  uint64_t id() const { return id_; }

  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    if (released_) return;  // the stream already ended; the outcome is decided
    cancel_requested_ = true;
    context_.TryCancel();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        released_ = true;
      }
      RemoveHold();
      return;
    }
    GenerationChunk chunk = FromGenerateResponse(response_);
    completion_tokens_ += static_cast<int>(chunk.token_ids.size());
    if (!final_delivered_) {
      final_delivered_ = chunk.final;
      on_chunk_(std::move(chunk));
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    if (!final_delivered_) {
      GenerationChunk final;
      final.final = true;
      final.usage.completion_tokens = completion_tokens_;
      bool cancel_requested;
      {
        std::lock_guard<std::mutex> lock(mu_);
        cancel_requested = cancel_requested_;
      }
      if (status.error_code() == grpc::StatusCode::CANCELLED && cancel_requested) {
        final.finish_reason = "cancelled";
      } else {
        final.finish_reason = "error";
        final.status =
            status.ok() ? absl::InternalError("the Generate stream ended without a final message")
                        : FromGrpcStatus(status);
      }
      on_chunk_(std::move(final));
    }
    owner_->CallDone(this);  // deletes this
  }

 private:
  RemoteBackend* owner_;
  const uint64_t id_;
  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  ChunkCallback on_chunk_;
  // Touched by reactions only, which gRPC serializes for one call.
  int completion_tokens_ = 0;
  bool final_delivered_ = false;

  std::mutex mu_;
  bool released_ = false;
  bool cancel_requested_ = false;
};

absl::StatusOr<std::unique_ptr<RemoteBackend>> RemoteBackend::Connect(
    const std::string& address, const RemoteBackendOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  auto channel = grpc::CreateCustomChannel(
      address, options.credentials ? options.credentials : grpc::InsecureChannelCredentials(),
      args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + options.connect_timeout)) {
    return absl::UnavailableError(absl::StrCat("cannot connect to bitserve server at ", address,
                                               " within ", options.connect_timeout.count(), " ms"));
  }
  return std::make_unique<RemoteBackend>(std::move(channel), options);
}

RemoteBackend::RemoteBackend(std::shared_ptr<grpc::Channel> channel,
                             const RemoteBackendOptions& options)
    : channel_(std::move(channel)), stub_(v1::Generation::NewStub(channel_)), options_(options) {}

RemoteBackend::~RemoteBackend() {
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& [id, call] : calls_) call->Cancel();
  all_done_.wait(lock, [this] { return calls_.empty(); });
}

absl::StatusOr<uint64_t> RemoteBackend::Submit(GenerationInput input, GenerationParams params,
                                               ChunkCallback on_chunk) {
  v1::GenerateRequest request = ToGenerateRequest(input, params);
  {
    // The server's validation, here: a bad parameter fails now rather than in a final chunk.
    GenerationInput checked_input;
    GenerationParams checked_params;
    if (absl::Status s = ParseGenerateRequest(request, &checked_input, &checked_params); !s.ok()) {
      return s;
    }
  }
  GenerateCall* call;
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    call = new GenerateCall(this, id, std::move(request), std::move(on_chunk));
    calls_.emplace(id, call);
    // Started under mu_: Cancel(id) from another thread cannot reach the call before it exists.
    call->Start();
  }
  return id;
}

void RemoteBackend::Cancel(uint64_t id, const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(id);
  if (it != calls_.end()) it->second->Cancel();
}

void RemoteBackend::CallDone(GenerateCall* call) {
  // All under mu_: Cancel cannot find the call once it is deleted, and the destructor, waiting
  // for calls_ to empty, cannot free mu_ before this returns.
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(call->id());
  delete call;
  all_done_.notify_all();
}

int RemoteBackend::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(calls_.size());
}

absl::StatusOr<std::vector<int32_t>> RemoteBackend::Tokenize(const std::string& text,
                                                             bool add_special) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.unary_timeout);
  if (!options_.api_key.empty()) context.AddMetadata("authorization", "Bearer " + options_.api_key);
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_special_tokens(add_special);
  v1::TokenizeResponse response;
  grpc::Status status = stub_->Tokenize(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end());
}

absl::StatusOr<ModelSummary> RemoteBackend::Info() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.unary_timeout);
  if (!options_.api_key.empty()) context.AddMetadata("authorization", "Bearer " + options_.api_key);
  v1::ModelInfoResponse response;
  grpc::Status status = stub_->ModelInfo(&context, v1::ModelInfoRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return FromModelInfoResponse(response);
}

}  // namespace bitserve::rpc
