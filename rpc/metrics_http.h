// The Prometheus scrape endpoint: a small HTTP server (Debian's cpp-httplib) on its own threads,
// serving
//   GET /metrics  -> render(), Content-Type "text/plain; version=0.0.4; charset=utf-8"
//   GET /healthz  -> 200 "ok" (liveness of the process; readiness is bitserve_ready and gRPC
//   health)
// and 404 for anything else.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "rpc/api_keys.h"

namespace httplib {
class Server;
}

namespace bitserve::rpc {

class MetricsHttpServer {
 public:
  ~MetricsHttpServer();  // Stop()
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  // Closes the listening socket, lets the requests being answered finish, joins the thread.
  // Idempotent.
  void Stop();

 private:
  friend absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsServer(
      const std::string& listen, std::function<std::string()> render, const ApiKeys* keys);
  MetricsHttpServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string host_;
  int port_ = 0;
};

// `listen` is "host:port", "[ipv6]:port" or ":port" (all interfaces); port 0 picks a free one
// (see port()). InvalidArgument for a malformed address, Unavailable when it cannot be bound.
// `render` is called on a server thread for every scrape; it must be thread-safe.
// `keys` (optional, not owned; `serve --metrics-auth`): /metrics then needs one of them
// ("Authorization: Bearer KEY", else 401); /healthz stays open.
absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsServer(
    const std::string& listen, std::function<std::string()> render, const ApiKeys* keys = nullptr);

}  // namespace bitserve::rpc
