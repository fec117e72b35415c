#include "rpc/metrics_http.h"

#include "httplib.h"
#include "rpc/http_listen.h"

namespace bitserve::rpc {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsServer(
    const std::string& listen, std::function<std::string()> render, const ApiKeys* keys) {
  absl::StatusOr<HttpListenAddress> address = ParseHttpListen(listen, "metrics listen address");
  if (!address.ok()) return address.status();
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->server_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->server_;
  // Scrapes are rare and short: two handler threads instead of httplib's one per core.
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // One request per connection: an idle keep-alive connection would hold one of the two threads
  // and delay Stop() by the keep-alive timeout.
  http.set_keep_alive_max_count(1);
  http.Get(
      "/metrics", [render, keys](const httplib::Request& request, httplib::Response& response) {
        if (keys != nullptr && !keys->Allows(request.get_header_value("Authorization"))) {
          response.status = 401;
          response.set_header("WWW-Authenticate", "Bearer");
          response.set_content(std::string(kApiKeyRequired) + "\n", "text/plain; charset=utf-8");
          return;
        }
        response.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
      });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain; charset=utf-8");
  });
  absl::StatusOr<int> port = StartHttpServer(http, *address, "metrics server", &server->thread_);
  if (!port.ok()) return port.status();
  server->port_ = *port;
  server->host_ = address->host;
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
