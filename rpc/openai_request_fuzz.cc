// libFuzzer target for the OpenAI API's request parser (rpc/openai_api.h), the HTTP API's first
// contact with untrusted bytes: any body gives a 400/404 error or a request the backend can take,
// never a crash, and responses built for it serialize.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <variant>

#include "rpc/openai_api.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "openai_request_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitserve::rpc;
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (openai::Endpoint endpoint :
       {openai::Endpoint::kCompletions, openai::Endpoint::kChatCompletions}) {
    auto parsed = openai::ParseRequest(endpoint, body, "m", 4096);
    if (const auto* e = std::get_if<openai::ApiError>(&parsed)) {
      if (e->status != 400 && e->status != 404) Fail("error status");
      if (e->message.empty()) Fail("empty error message");
      (void)e->ToJson().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      continue;
    }
    const auto& r = std::get<openai::ParsedRequest>(parsed);
    if (r.prompts.empty()) Fail("no prompt");
    if (r.n < 1 || r.n > 16) Fail("n");
    if (r.params.max_new_tokens < 1) Fail("max_new_tokens");
    if (!r.params.sampling.Validate().ok()) Fail("sampling parameters");
    if (r.params.sampling.top_logprobs < 0 || r.params.sampling.top_logprobs > 20) {
      Fail("top_logprobs");
    }
    if (r.include_usage && !r.stream) Fail("include_usage without stream");
    // What a response for it looks like, with bytes that are not UTF-8 in it.
    std::vector<openai::ChoiceResult> choices(r.prompts.size() * r.n);
    for (auto& c : choices) {
      c.text = body.substr(0, 8);
      c.logprobs = {{1, -0.5f, {{2, -1.0f}}}};
      c.finish_reason = "eos";
    }
    const auto bytes = [&](int32_t) { return body.substr(0, 4); };
    (void)openai::CompletionResponse(r, "id", 0, "m", choices, bytes)
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    (void)openai::StreamChunk(r, "id", 0, "m", 0, body.substr(0, 4), choices[0].logprobs, "", false,
                              bytes)
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
