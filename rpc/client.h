// RemoteBackend: a GenerationBackend over a gRPC channel to a `bitserve serve` (bitserve.v1), so
// that code written against GenerationBackend (`bitserve batch --server`, `bitserve client`) drives
// a remote server the same way as the in-process coordinator.
//
// Each Submit opens one server-streaming Generate call on gRPC's callback API (no thread per
// request); chunks are delivered on gRPC's callback threads, in order, and exactly one final
// chunk ends every accepted request, as GenerationBackend promises.
//
// Errors: Submit validates the request locally with the server's own rules (INVALID_ARGUMENT
// naming the field) and returns them synchronously. What only the server can know (queue full:
// RESOURCE_EXHAUSTED, UNAVAILABLE, a deadline, a lost connection) arrives as the final chunk,
// finish_reason "error", with that status.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "bitserve/v1/bitserve.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "rpc/generation_backend.h"

namespace bitserve::rpc {

struct RemoteBackendOptions {
  // Connect() waits this long for the channel to become ready.
  std::chrono::milliseconds connect_timeout{10000};
  // Deadline of each Generate call; 0 = none. A passed deadline ends the request with a final
  // "error" chunk of status DEADLINE_EXCEEDED.
  std::chrono::milliseconds request_timeout{0};
  // Deadline of Tokenize and Info.
  std::chrono::milliseconds unary_timeout{30000};
  int max_message_bytes = 64 << 20;
  // Sent with every call as "authorization: Bearer KEY" (`serve --api-key-file`); empty: none.
  std::string api_key;
  // TLS (rpc/tls.h GrpcChannelCredentials); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class RemoteBackend : public GenerationBackend {
 public:
  // A channel to `address` (host:port), ready within connect_timeout or UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<RemoteBackend>> Connect(
      const std::string& address, const RemoteBackendOptions& options = {});
  // Over an existing channel (other credentials, tests). Does not wait for it.
  explicit RemoteBackend(std::shared_ptr<grpc::Channel> channel,
                         const RemoteBackendOptions& options = {});
  // Cancels the requests still streaming and waits until each has delivered its final chunk.
  ~RemoteBackend() override;

  absl::StatusOr<uint64_t> Submit(GenerationInput input, GenerationParams params,
                                  ChunkCallback on_chunk) override;
  // Cancels the call (context TryCancel); the request ends with a final "cancelled" chunk, or
  // with the server's final message when that was already on its way.
  void Cancel(uint64_t id, const absl::Status& why) override;
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text, bool add_special) override;
  absl::StatusOr<ModelSummary> Info() override;

  // Requests submitted and not yet finished.
  int InFlight() const;

 private:
  class GenerateCall;
  friend class GenerateCall;
  void CallDone(GenerateCall* call);  // the call's last act, from OnDone

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
  RemoteBackendOptions options_;

  mutable std::mutex mu_;
  std::condition_variable all_done_;
  uint64_t next_id_ = 1;
  absl::flat_hash_map<uint64_t, GenerateCall*> calls_;  // owned by themselves: deleted in OnDone
};

}  // namespace bitserve::rpc
