// The OpenAI-compatible HTTP API's JSON (served by rpc/openai_http.h; docs/api.md "HTTP API"):
// requests of POST /v1/completions and /v1/chat/completions into the types of
// generation_backend.h, and the responses, stream chunks and errors in OpenAI's shapes. Pure
// functions of their inputs, so every field is unit-tested without a server.
//
// Parameters: model, prompt (completions: a string, token ids, or a list of either: one choice
// set per prompt) or messages (chat: roles system/developer/user/assistant, content a string or
// text parts), max_tokens / max_completion_tokens, temperature, top_p, n, stop, seed, logprobs /
// top_logprobs, presence_penalty, frequency_penalty, stream, stream_options.include_usage, and
// vLLM's extensions top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids. What bitserve
// cannot do (tools, echo, suffix, logit_bias, best_of != n, non-text response formats) is a 400
// naming the parameter; an unknown parameter is a 400 too (a misspelt one must not silently fall
// back to a default); user, metadata, store, service_tier and parallel_tool_calls are accepted
// and ignored.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "rpc/generation_backend.h"

namespace bitserve::rpc::openai {

enum class Endpoint { kCompletions, kChatCompletions };

// {"error": {"message", "type", "param", "code"}} and the HTTP status it goes with.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
  nlohmann::json ToJson() const;
};

// The HTTP status and error type of a backend status: INVALID_ARGUMENT / FAILED_PRECONDITION /
// OUT_OF_RANGE 400, NOT_FOUND 404, RESOURCE_EXHAUSTED 429 when the queue is full and 400
// (context_length_exceeded) for a prompt beyond the model's or the KV cache's capacity,
// UNAVAILABLE 503, DEADLINE_EXCEEDED 504, anything else 500.
ApiError ErrorFromStatus(const absl::Status& status);

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::vector<GenerationInput> prompts;  // one (chat: always one) or more
  GenerationParams params;
  int n = 1;  // choices per prompt; choice index = prompt * n + i
  bool stream = false;
  bool include_usage = false;
  int completion_logprobs = -1;  // completions: the `logprobs` alternatives asked for, -1: none
  // vLLM's extension: each choice (and stream chunk) also carries "token_ids", the ids of its
  // generated tokens (bench-serve counts tokens per chunk with it).
  bool return_token_ids = false;
};

// `served_model`: the name GET /v1/models lists; a request for another model is a 404
// (model_not_found). `max_model_len`: the default max_tokens of a chat request (none asked: as
// many as fit); completions default to 16 tokens, as OpenAI's.
std::variant<ParsedRequest, ApiError> ParseRequest(Endpoint endpoint, const std::string& body,
                                                   const std::string& served_model,
                                                   int max_model_len);

// What a response needs of the model's vocabulary: a token's bytes (logprobs' "token" and
// "bytes"). Empty bytes for an id it does not know.
using TokenBytesFn = std::function<std::string(int32_t)>;

// One choice as the backend's chunks built it.
struct ChoiceResult {
  std::string text;
  std::vector<SampleResult> logprobs;  // one per generated token when logprobs were asked
  std::string finish_reason;           // the backend's: eos, stop, length, cancelled, error
  Usage usage;
  std::vector<int32_t> token_ids;  // the generated tokens (ParsedRequest::return_token_ids)
};

// OpenAI's finish_reason of a backend one: eos and stop -> "stop", length -> "length",
// cancelled -> "abort" (the server drained), error -> "error".
std::string FinishReason(const std::string& backend_reason);

// The whole (non-streamed) response.
nlohmann::json CompletionResponse(const ParsedRequest& request, const std::string& id,
                                  int64_t created, const std::string& model,
                                  const std::vector<ChoiceResult>& choices,
                                  const TokenBytesFn& token_bytes);

// A stream chunk of one choice: `text` and its tokens' logprobs (and ids, when asked), then
// (finish_reason non-empty) its last chunk. With `role_only` (chat): the first chunk,
// {"role": "assistant", "content": ""}.
nlohmann::json StreamChunk(const ParsedRequest& request, const std::string& id, int64_t created,
                           const std::string& model, int index, const std::string& text,
                           const std::vector<SampleResult>& logprobs,
                           const std::string& finish_reason, bool role_only,
                           const TokenBytesFn& token_bytes,
                           const std::vector<int32_t>& token_ids = {});

// The usage chunk of stream_options.include_usage (choices: []), after every choice's last chunk.
nlohmann::json UsageChunk(const ParsedRequest& request, const std::string& id, int64_t created,
                          const std::string& model, const Usage& usage);

// Usage over all choices: prompt tokens once per prompt, completion tokens of every choice.
Usage TotalUsage(const ParsedRequest& request, const std::vector<ChoiceResult>& choices);

}  // namespace bitserve::rpc::openai
