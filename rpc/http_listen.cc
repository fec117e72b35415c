#include "rpc/http_listen.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace bitserve::rpc {

absl::StatusOr<HttpListenAddress> ParseHttpListen(const std::string& listen,
                                                  absl::string_view what) {
  const size_t colon = listen.rfind(':');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", listen, "\": ", why,
                                                   " (expected host:port, [ipv6]:port or :port)"));
  };
  if (colon == std::string::npos) return bad("no port");
  HttpListenAddress out;
  out.host = listen.substr(0, colon);
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  } else if (out.host.find(':') != std::string::npos) {
    return bad("an IPv6 host needs brackets");
  }
  if (out.host.empty()) out.host = "0.0.0.0";
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &out.port) || out.port < 0 || out.port > 65535) {
    return bad("the port is not a number in [0, 65535]");
  }
  return out;
}

absl::StatusOr<int> StartHttpServer(httplib::Server& server, const HttpListenAddress& address,
                                    absl::string_view what, std::thread* thread) {
  server.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  int port = 0;
  if (address.port == 0) {
    port = server.bind_to_any_port(address.host);
  } else if (server.bind_to_port(address.host, address.port)) {
    port = address.port;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat(what, ": cannot listen on ", address.host, ":",
                                               address.port, " (address in use or invalid)"));
  }
  *thread = std::thread([&server] { server.listen_after_bind(); });
  // stop() before the accept loop has started would be lost (httplib only stops a running
  // server), so return only once it runs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server.is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server.is_running()) {
    thread->join();
    return absl::InternalError(
        absl::StrCat(what, " on ", address.host, ":", port, " did not start"));
  }
  return port;
}

}  // namespace bitserve::rpc
