#include "tools/command_line.h"

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bitserve::cli {

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int32_t id;
    if (part.empty() || !absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", part,
                       "\" is not a token id (expected comma-separated non-negative integers)"));
    }
    ids.push_back(id);
  }
  return ids;
}

void AddKvDtypeOption(CLI::App* cmd, std::string* value) {
  cmd->add_option("--kv-dtype", *value,
                  "KV cache element type: f32 (cpu only), bf16, int8, int4 (default: f32 on cpu, "
                  "bf16 on cuda)");
}

absl::StatusOr<std::optional<KvDtype>> ParseKvDtypeFlag(const std::string& value) {
  if (value.empty()) return std::optional<KvDtype>();
  absl::StatusOr<KvDtype> dtype = ParseKvDtype(value);
  if (!dtype.ok())
    return absl::InvalidArgumentError(absl::StrCat("--kv-dtype: ", dtype.status().message()));
  return std::optional<KvDtype>(*dtype);
}

void AddKvRotationOption(CLI::App* cmd, std::string* value) {
  cmd->add_option("--kv-rotation", *value,
                  "Rotation of q and k per head before keys are cached: none or hadamard (keeps "
                  "q.k, spreads outlier key channels before int8/int4 quantization; default: "
                  "hadamard for int8 and int4, none for f32 and bf16)");
}

absl::StatusOr<std::optional<KvRotation>> ParseKvRotationFlag(const std::string& value) {
  if (value.empty()) return std::optional<KvRotation>();
  absl::StatusOr<KvRotation> rotation = ParseKvRotation(value);
  if (!rotation.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-rotation: ", rotation.status().message()));
  }
  return std::optional<KvRotation>(*rotation);
}

void AddLoadFormatOption(CLI::App* cmd, std::string* value) {
  cmd->add_option("--load-format", *value,
                  "Weights: safetensors (the checkpoint; default) or dummy (random weights of "
                  "config.json's shapes made on the GPU, no weight file needed: benchmarks)");
}

absl::StatusOr<LoadFormat> ParseLoadFormatFlag(const std::string& value) {
  if (value.empty()) return LoadFormat::kSafetensors;
  absl::StatusOr<LoadFormat> format = ParseLoadFormat(value);
  if (!format.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--load-format: ", format.status().message()));
  }
  return *format;
}

void AddLmHeadDtypeOption(CLI::App* cmd, std::string* value) {
  cmd->add_option("--lm-head-dtype", *value,
                  "LM head weights: bf16 (the checkpoint's; default) or int8 (a scale per "
                  "vocabulary row, the normed row quantized per token: half the LM head's bytes, "
                  "a small perplexity cost measured in docs/quality.md)");
}

absl::StatusOr<LmHeadDtype> ParseLmHeadDtypeFlag(const std::string& value) {
  if (value.empty()) return LmHeadDtype::kBf16;
  absl::StatusOr<LmHeadDtype> dtype = ParseLmHeadDtype(value);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--lm-head-dtype: ", dtype.status().message()));
  }
  return *dtype;
}

void AddApiKeyOption(CLI::App* cmd, std::string* value) {
  cmd->add_option("--api-key", *value,
                  "API key of the server (`serve --api-key-file`), sent as \"authorization: "
                  "Bearer KEY\" (default: $BITSERVE_API_KEY)");
}

void AddClientTlsOptions(CLI::App* cmd, rpc::ClientTlsFiles* files) {
  cmd->add_option("--tls-ca", files->ca,
                  "TLS: PEM certificate(s) of the CA that signed the server's (TLS is on with any "
                  "--tls-* flag; without --tls-ca, the system's roots)");
  cmd->add_option("--tls-cert", files->cert, "TLS: client certificate (PEM), for mutual TLS");
  cmd->add_option("--tls-key", files->key, "TLS: the client certificate's private key (PEM)");
}

std::string ApiKey(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  const char* env = std::getenv("BITSERVE_API_KEY");
  return env != nullptr ? std::string(env) : std::string();
}

absl::StatusOr<std::string> WorkerSecret(const std::string& path, const std::string& flag) {
  std::string secret;
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
    std::getline(in, secret);
  } else if (const char* env = std::getenv("BITSERVE_WORKER_SECRET")) {
    secret = env;
  } else {
    return std::string();
  }
  secret = std::string(absl::StripAsciiWhitespace(secret));
  if (secret.size() < 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "$BITSERVE_WORKER_SECRET" : flag + " " + path,
                     ": the join secret must be at least 16 characters"));
  }
  return secret;
}

void RunOrExit(absl::string_view command, const std::function<absl::Status()>& body) {
  absl::Status status = body();
  if (!status.ok()) {
    std::cerr << "bitserve " << command << ": " << status.message() << std::endl;
    std::exit(1);
  }
}

}  // namespace bitserve::cli
