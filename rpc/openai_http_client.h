// A GenerationBackend that talks to an OpenAI-compatible HTTP server (`bitserve serve
// --http-listen`, or any server of that API that streams `/v1/completions`), so that
// `bitserve bench-serve --base-url URL` measures what an HTTP client sees: every request is one
// streamed POST (server-sent events) on its own connection and thread, as vLLM's benchmark client
// does.
//
// What it asks for: token-id prompts go to /v1/completions as a list of ids, text prompts as text,
// chat inputs to /v1/chat/completions; `stream`, `stream_options.include_usage`, `ignore_eos`,
// `max_tokens`, the sampling parameters, and vLLM's `return_token_ids`, so that each chunk's
// token count is exact (a server that ignores it gets one token counted per text chunk, as vLLM's
// client assumes). Usage from the final usage chunk.
//
// Errors: an HTTP error status or an `{"error": ...}` event ends the request with a final chunk
// whose status maps the HTTP status back (400 -> INVALID_ARGUMENT, 401 -> UNAUTHENTICATED,
// 404 -> NOT_FOUND, 429 -> RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE, other -> UNKNOWN) and carries
// the server's message; a connection that fails is UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/generation_backend.h"

namespace bitserve::rpc {

struct OpenAiHttpClientOptions {
  std::string api_key;  // sent as "Authorization: Bearer KEY" when not empty
  // https only: the CA file that verifies the server (empty: the system's), and a client
  // certificate and key for servers that ask for one.
  std::string ca_file, cert_file, key_file;
  std::string model;  // the model to name in requests (empty: the first one /v1/models lists)
};

class OpenAiHttpBackend final : public GenerationBackend {
 public:
  // base_url: "http://host:port" or "https://host:port" (a trailing "/v1" or "/" is accepted).
  // Reads /v1/models; fails (UNAVAILABLE, naming the URL) when the server cannot be reached.
  static absl::StatusOr<std::unique_ptr<OpenAiHttpBackend>> Connect(
      const std::string& base_url, OpenAiHttpClientOptions options);
  ~OpenAiHttpBackend() override;  // cancels what still runs and waits for it

  absl::StatusOr<uint64_t> Submit(GenerationInput input, GenerationParams params,
                                  ChunkCallback on_chunk) override;
  void Cancel(uint64_t id, const absl::Status& why) override;
  // Not part of the OpenAI API: UNIMPLEMENTED.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text, bool add_special) override;
  // From the model card: id, max_model_len and, from a bitserve server, vocab size, eos ids,
  // device and KV facts ("bitserve" in the card); 0 / empty where the server does not say.
  absl::StatusOr<ModelSummary> Info() override;

  struct Shared;

 private:
  explicit OpenAiHttpBackend(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  std::shared_ptr<Shared> shared_;
};

// The Status of an HTTP error status and the server's message.
absl::Status StatusFromHttp(int http_status, const std::string& message);

}  // namespace bitserve::rpc
