// API keys of `serve --api-key-file FILE`: the gRPC API (metadata `authorization: Bearer KEY`)
// and the HTTP API (header `Authorization: Bearer KEY`) answer UNAUTHENTICATED / 401 to a call
// without one of them. Health stays open (probes), and so do metrics unless `--metrics-auth`.
// Keys are compared in time independent of where they differ, and never logged.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitserve::rpc {

class ApiKeys {
 public:
  // No keys: everything is allowed.
  ApiKeys() = default;
  // One key per line; blank lines and lines starting with '#' are skipped, surrounding
  // whitespace trimmed. InvalidArgument for an unreadable file, a file without keys, or a key
  // shorter than 16 characters or with whitespace inside (named by line number, not by value).
  static absl::StatusOr<ApiKeys> Load(const std::string& path);
  static ApiKeys FromKeys(std::vector<std::string> keys) { return ApiKeys(std::move(keys)); }

  bool enabled() const { return !keys_.empty(); }
  int size() const { return static_cast<int>(keys_.size()); }
  // Whether an `authorization` value ("Bearer KEY", the scheme case-insensitive) carries one of
  // the keys; true for anything when no keys are set.
  bool Allows(absl::string_view authorization) const;

 private:
  explicit ApiKeys(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  std::vector<std::string> keys_;
};

// The message of a refused call (no key or a wrong one), the same for both APIs.
inline constexpr absl::string_view kApiKeyRequired =
    "a valid API key is required: send the header \"Authorization: Bearer KEY\" (bitserve's "
    "clients: --api-key KEY or BITSERVE_API_KEY)";

}  // namespace bitserve::rpc
