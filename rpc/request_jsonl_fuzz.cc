// libFuzzer target for a JSONL request line (rpc/request_json.h: `bitserve batch` and
// `bench-serve --dataset` input): an error naming what is wrong, or a request whose parameters
// the backend accepts, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "rpc/request_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string line(reinterpret_cast<const char*>(data), size);
  std::optional<nlohmann::json> id;
  auto request = bitserve::rpc::ParseRequestLine(line, &id);
  if (!request.ok()) {
    if (request.status().message().empty()) std::abort();
    return 0;
  }
  if (request->key.empty() || !id.has_value() || !request->params.sampling.Validate().ok()) {
    std::fprintf(stderr, "request_jsonl_fuzz: an accepted line breaks an invariant\n");
    std::abort();
  }
  return 0;
}
