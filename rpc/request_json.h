// A generation request as one line of JSON: the input of `bitserve batch` and of `bitserve
// bench-serve --dataset`.
//
//   {"id": "a" | 7,                                   required; string or number, unique in the
//                                                     file (bench-serve's datasets may leave it
//                                                     out)
//    "prompt": "text" | "messages": [{"role", "content"}, ...] | "prompt_ids": [1, 2, 3],
//    optional, as `bitserve generate`: "max_tokens", "temperature", "top_k", "top_p", "min_p",
//    "seed", "stop" (string or list), "stop_token_ids", "ignore_eos", "logprobs" (bool, or a number
//    of alternatives), "top_logprobs", "repetition_penalty", "presence_penalty",
//    "frequency_penalty", "priority"}
// Any other field is an error (a misspelt parameter must not silently fall back to a default).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "rpc/generation_backend.h"

namespace bitserve::rpc {

struct JsonRequest {
  nlohmann::json id;  // string or number, as in the input
  std::string key;    // id.dump(): the identity used for resume and duplicates
  GenerationInput input;
  GenerationParams params;
};

// Parses and validates one input line. InvalidArgument naming the field on error; `id` receives the
// line's id whenever it has a valid one (also when another field is wrong), so that the error can
// be recorded under it.
absl::StatusOr<JsonRequest> ParseRequestLine(absl::string_view line,
                                             std::optional<nlohmann::json>* id);

}  // namespace bitserve::rpc
