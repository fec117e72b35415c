// A TLS server certificate that follows its files: the HTTP API's certificate, key and client CA
// are re-read when the files change (checked at most once per check interval, on a handshake), so
// that a renewed certificate (cert-manager, a Kubernetes Secret update) takes effect for new
// connections without a restart, and open connections keep theirs. A change that cannot be used
// (unreadable, not PEM, a key that does not match the certificate: e.g. the files caught half
// written) keeps the previous certificate and logs why once. The gRPC API does the same with
// gRPC's own file watcher (rpc/tls.h GrpcServerCredentials).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "rpc/tls.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace bitserve::rpc {

// How often the certificate files are looked at for changes.
inline constexpr std::chrono::seconds kTlsReloadInterval{1};

class ReloadingServerCertificate {
 public:
  // Reads the files now: InvalidArgument naming the flag when they cannot serve.
  static absl::StatusOr<std::shared_ptr<ReloadingServerCertificate>> Load(
      const ServerTlsFiles& files, std::chrono::milliseconds check_interval = kTlsReloadInterval);
  ~ReloadingServerCertificate();

  // Sets up `ctx` (TLS 1.2+, no compression; with a client CA, clients must present a certificate
  // it signed) to take its certificate, key and client CA from this object at each handshake. The
  // object must outlive `ctx`.
  bool Install(SSL_CTX* ctx);

  struct Loaded;  // the parsed files (OpenSSL objects), immutable once made
  // The current files, re-read first when the check interval has passed and they changed (what a
  // handshake uses).
  std::shared_ptr<const Loaded> Current();

 private:
  ReloadingServerCertificate() = default;

  ServerTlsFiles files_;
  std::chrono::milliseconds check_interval_{0};
  std::mutex mu_;
  std::shared_ptr<const Loaded> current_;
  std::string last_error_;  // the reload failure last logged
  std::chrono::steady_clock::time_point next_check_;
};

}  // namespace bitserve::rpc
