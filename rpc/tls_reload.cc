#include "rpc/tls_reload.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <iostream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve::rpc {

struct ReloadingServerCertificate::Loaded {
  std::string contents;  // the files' bytes, to notice a change
  X509* leaf = nullptr;
  STACK_OF(X509) * chain = nullptr;  // intermediates after the leaf
  EVP_PKEY* key = nullptr;
  X509_STORE* client_ca = nullptr;                  // null without mutual TLS
  STACK_OF(X509_NAME) * client_ca_names = nullptr;  // sent in the certificate request
  ~Loaded() {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    X509_STORE_free(client_ca);
    sk_X509_NAME_pop_free(client_ca_names, X509_NAME_free);
  }
};

namespace {

using Loaded = ReloadingServerCertificate::Loaded;

// Every certificate of a PEM text, in order.
std::vector<X509*> ReadCertificates(const std::string& pem) {
  std::vector<X509*> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.push_back(cert);
  BIO_free(bio);
  ERR_clear_error();  // the end of the text reads as an error
  return out;
}

absl::StatusOr<std::shared_ptr<const Loaded>> Parse(const ServerTlsFiles& files) {
  auto loaded = std::make_shared<Loaded>();
  ASSIGN_OR_RETURN(std::string cert_pem, ReadPemFile(files.cert, "--tls-cert"));
  ASSIGN_OR_RETURN(std::string key_pem, ReadPemFile(files.key, "--tls-key"));
  std::string ca_pem;
  if (!files.client_ca.empty()) {
    ASSIGN_OR_RETURN(ca_pem, ReadPemFile(files.client_ca, "--tls-client-ca"));
  }
  loaded->contents = absl::StrCat(cert_pem, "\n", key_pem, "\n", ca_pem);
  std::vector<X509*> certs = ReadCertificates(cert_pem);
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", files.cert, ": no certificate in it"));
  }
  loaded->leaf = certs[0];
  loaded->chain = sk_X509_new_null();
  for (size_t i = 1; i < certs.size(); ++i) sk_X509_push(loaded->chain, certs[i]);
  BIO* bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  loaded->key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ERR_clear_error();
  if (loaded->key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", files.key, ": no private key in it (or one with a passphrase)"));
  }
  if (X509_check_private_key(loaded->leaf, loaded->key) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", files.key, " is not the key of --tls-cert ", files.cert));
  }
  if (!files.client_ca.empty()) {
    std::vector<X509*> cas = ReadCertificates(ca_pem);
    if (cas.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-client-ca ", files.client_ca, ": no certificate in it"));
    }
    loaded->client_ca = X509_STORE_new();
    loaded->client_ca_names = sk_X509_NAME_new_null();
    for (X509* ca : cas) {
      X509_STORE_add_cert(loaded->client_ca, ca);
      sk_X509_NAME_push(loaded->client_ca_names, X509_NAME_dup(X509_get_subject_name(ca)));
      X509_free(ca);
    }
  }
  return loaded;
}

// OpenSSL's certificate callback: the current certificate for this handshake.
int UseCurrentCertificate(SSL* ssl, void* arg) {
  std::shared_ptr<const Loaded> c = static_cast<ReloadingServerCertificate*>(arg)->Current();
  if (c == nullptr) return 0;
  if (SSL_use_certificate(ssl, c->leaf) != 1 || SSL_set1_chain(ssl, c->chain) != 1 ||
      SSL_use_PrivateKey(ssl, c->key) != 1) {
    return 0;
  }
  if (c->client_ca != nullptr) {
    SSL_set1_verify_cert_store(ssl, c->client_ca);
    SSL_set_client_CA_list(ssl, SSL_dup_CA_list(c->client_ca_names));
  }
  return 1;
}

}  // namespace

absl::StatusOr<std::shared_ptr<ReloadingServerCertificate>> ReloadingServerCertificate::Load(
    const ServerTlsFiles& files, std::chrono::milliseconds check_interval) {
  std::shared_ptr<ReloadingServerCertificate> out(new ReloadingServerCertificate());
  out->files_ = files;
  out->check_interval_ = check_interval;
  ASSIGN_OR_RETURN(out->current_, Parse(files));
  out->next_check_ = std::chrono::steady_clock::now() + check_interval;
  return out;
}

ReloadingServerCertificate::~ReloadingServerCertificate() = default;

std::shared_ptr<const Loaded> ReloadingServerCertificate::Current() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (now < next_check_) return current_;
  next_check_ = now + check_interval_;
  absl::StatusOr<std::shared_ptr<const Loaded>> fresh = Parse(files_);
  if (!fresh.ok()) {
    if (std::string error(fresh.status().message()); error != last_error_) {
      std::cerr << "bitserve serve: keeping the HTTP API's certificate: " << error << std::endl;
      last_error_ = error;
    }
    return current_;
  }
  last_error_.clear();
  if ((*fresh)->contents != current_->contents) {
    current_ = *std::move(fresh);
    std::cerr << "bitserve serve: the HTTP API's certificate files changed; new connections use "
                 "them"
              << std::endl;
  }
  return current_;
}

bool ReloadingServerCertificate::Install(SSL_CTX* ctx) {
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_cert_cb(ctx, UseCurrentCertificate, this);
  if (!files_.client_ca.empty()) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return true;
}

}  // namespace bitserve::rpc
