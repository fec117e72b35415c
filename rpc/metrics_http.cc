#include "rpc/metrics_http.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace bitserve::rpc {
namespace {

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("metrics listen address \"", listen, "\": ", why,
                                                   " (expected host:port, [ipv6]:port or :port)"));
  };
  if (colon == std::string::npos) return bad("no port");
  HostPort out;
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

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsServer(
    const std::string& listen, std::function<std::string()> render) {
  absl::StatusOr<HostPort> address = ParseListen(listen);
  if (!address.ok()) return address.status();
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->server_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->server_;
  // Scrapes are rare and short: two handler threads instead of httplib's one per core.
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // One request per connection: an idle keep-alive connection would hold one of the two threads
  // and delay Stop() by the keep-alive timeout.
  http.set_keep_alive_max_count(1);
  http.Get("/metrics", [render](const httplib::Request&, httplib::Response& response) {
    response.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain; charset=utf-8");
  });
  // httplib's default is SO_REUSEPORT, which lets a second server share the port silently (two
  // processes answering scrapes in turn). SO_REUSEADDR alone still allows a quick restart.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (address->port == 0) {
    server->port_ = http.bind_to_any_port(address->host);
    if (server->port_ < 0) server->port_ = 0;
  } else if (http.bind_to_port(address->host, address->port)) {
    server->port_ = address->port;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: cannot listen on ", listen, " (address in use or invalid)"));
  }
  server->host_ = address->host;
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  // stop() before the accept loop has started would be lost (httplib only stops a running server),
  // so return only once it runs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!http.is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!http.is_running()) {
    // Not expected: listen_after_bind failed at once. Join what is there and report it.
    server->thread_.join();
    return absl::InternalError(absl::StrCat("metrics server on ", listen, " did not start"));
  }
  return server;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (server_ && thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace bitserve::rpc
