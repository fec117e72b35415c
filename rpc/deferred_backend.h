// A GenerationBackend that is not there yet: the gRPC server starts (liveness answers, readiness
// is NOT_SERVING) before the coordinator exists, e.g. while `bitserve serve --worker-listen` waits
// for its worker or a large model loads. Until Set(), calls are UNAVAILABLE "starting".
#pragma once

#include <atomic>

#include "absl/status/status.h"
#include "rpc/generation_backend.h"

namespace bitserve::rpc {

class DeferredBackend final : public GenerationBackend {
 public:
  // `backend` is not owned and must outlive every call made through this one.
  void Set(GenerationBackend* backend) { backend_.store(backend); }

  absl::StatusOr<uint64_t> Submit(GenerationInput input, GenerationParams params,
                                  ChunkCallback on_chunk) override {
    GenerationBackend* b = backend_.load();
    if (b == nullptr) return Starting();
    return b->Submit(std::move(input), std::move(params), std::move(on_chunk));
  }
  void Cancel(uint64_t id, const absl::Status& why) override {
    if (GenerationBackend* b = backend_.load()) b->Cancel(id, why);
  }
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text,
                                                bool add_special) override {
    GenerationBackend* b = backend_.load();
    if (b == nullptr) return Starting();
    return b->Tokenize(text, add_special);
  }
  absl::StatusOr<ModelSummary> Info() override {
    GenerationBackend* b = backend_.load();
    if (b == nullptr) return Starting();
    return b->Info();
  }

 private:
  static absl::Status Starting() {
    return absl::UnavailableError(
        "the server is starting (the model is loading or no worker has joined)");
  }
  std::atomic<GenerationBackend*> backend_{nullptr};
};

}  // namespace bitserve::rpc
