// What the HTTP servers (the metrics endpoint, rpc/metrics_http.h, and the OpenAI-compatible API,
// rpc/openai_http.h) share: the listen address and starting a cpp-httplib server on it.
#pragma once

#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace httplib {
class Server;
}

namespace bitserve::rpc {

struct HttpListenAddress {
  std::string host;  // "0.0.0.0" for ":port"
  int port = 0;      // 0: any free port
};

// "host:port", "[ipv6]:port" or ":port" (all interfaces). InvalidArgument naming `what` (e.g.
// "metrics listen address") otherwise.
absl::StatusOr<HttpListenAddress> ParseHttpListen(const std::string& listen,
                                                  absl::string_view what);

// Binds `server` (SO_REUSEADDR only: httplib's default SO_REUSEPORT would let a second server
// share the port silently), runs its accept loop on *thread and returns once it runs; the bound
// port (the address may ask for port 0). Unavailable when the address cannot be bound.
absl::StatusOr<int> StartHttpServer(httplib::Server& server, const HttpListenAddress& address,
                                    absl::string_view what, std::thread* thread);

}  // namespace bitserve::rpc
