// TLS of the public APIs (issue 21): the PEM files of `serve
// --tls-cert/--tls-key[/--tls-client-ca]` and of the clients' `--tls-ca[/--tls-cert/--tls-key]`, as
// gRPC credentials (the HTTP API takes the same files: rpc/openai_http.h). Mutual TLS when the
// server names a client CA: a client must then present a certificate it signed.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace bitserve::rpc {

struct ServerTlsFiles {
  std::string cert, key;  // both or neither: TLS on
  std::string client_ca;  // optional: mutual TLS
  bool enabled() const { return !cert.empty() || !key.empty() || !client_ca.empty(); }
};

struct ClientTlsFiles {
  std::string ca;         // the server's CA (empty: the system's roots)
  std::string cert, key;  // optional client certificate (mutual TLS)
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// How serve's log lines name the link's protection: "", " (TLS)" or " (mutual TLS)".
inline const char* TlsLabel(const ServerTlsFiles& files) {
  if (!files.enabled()) return "";
  return files.client_ca.empty() ? " (TLS)" : " (mutual TLS)";
}

// A file's contents; InvalidArgument naming `flag` when it cannot be read or is not PEM.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag);
// InvalidArgument naming the flag when cert and key do not come together, a file is missing or
// not PEM, or the key is not the certificate's.
absl::Status CheckServerTlsFiles(const ServerTlsFiles& files);

// Insecure credentials when TLS is off. With TLS the files are watched: a changed certificate,
// key or client CA serves new connections within rpc/tls_reload.h's kTlsReloadInterval, and open
// connections keep theirs.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(
    const ServerTlsFiles& files);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcChannelCredentials(
    const ClientTlsFiles& files);

}  // namespace bitserve::rpc
