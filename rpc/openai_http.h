// The OpenAI-compatible HTTP API (`bitserve serve --http-listen ADDR`, beside gRPC, on the same
// GenerationBackend; docs/api.md "HTTP API"), on Debian's cpp-httplib:
//   POST /v1/completions, POST /v1/chat/completions   (rpc/openai_api.h: parameters, shapes;
//                                                       "stream": true answers server-sent events)
//   GET  /v1/models, GET /v1/models/{model}
//   GET  /health                                       200 when ready, else 503
// Errors are OpenAI's JSON ({"error": {...}}) with 400 / 404 / 429 / 503 (rpc/openai_api.h
// ErrorFromStatus). A client that disconnects while its request runs (streamed or not) has it
// cancelled within ~100 ms; nothing else is affected. n > 1 and several prompts run as separate
// backend requests (choice i with seed + i when a seed is given).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "rpc/api_keys.h"
#include "rpc/generation_backend.h"
#include "rpc/openai_api.h"
#include "rpc/tls_reload.h"

namespace httplib {
class Server;
}

namespace bitserve::rpc {

struct OpenAiHttpOptions {
  std::string listen;      // "host:port", "[ipv6]:port" or ":port"; port 0 picks a free one
  std::string model_name;  // what /v1/models lists and requests must name
  // Requests answered at once (each streams from its own thread); more wait for a thread.
  int threads = 512;
  std::function<bool()> ready;       // /health; null: always ready
  openai::TokenBytesFn token_bytes;  // logprobs' token text; null: "token_id:N"
  // Not owned; with keys, every route but /health needs "Authorization: Bearer KEY" (else 401).
  const ApiKeys* api_keys = nullptr;
  // TLS (HTTPS): PEM files; empty cert: plain HTTP. client_ca: clients must present a
  // certificate it signed (mutual TLS).
  std::string tls_cert, tls_key, tls_client_ca;
};

class OpenAiHttpServer {
 public:
  // `backend` is not owned and must outlive the server. InvalidArgument for a malformed address,
  // Unavailable when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> Start(GenerationBackend* backend,
                                                                 OpenAiHttpOptions options);
  ~OpenAiHttpServer();  // Stop()
  OpenAiHttpServer(const OpenAiHttpServer&) = delete;
  OpenAiHttpServer& operator=(const OpenAiHttpServer&) = delete;

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // Stops listening, lets the requests being answered finish, joins the thread. Idempotent.
  void Stop();

 private:
  OpenAiHttpServer() = default;
  OpenAiHttpOptions options_;                                // read by the routes' handler
  std::shared_ptr<ReloadingServerCertificate> certificate_;  // with TLS; outlives server_
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string host_;
  int port_ = 0;
};

}  // namespace bitserve::rpc
