// The JSONL records of `bitserve batch`: input lines (requests), output lines (results and errors),
// and the scan of an existing output file that makes a job resumable.
//
// Input line, one JSON object:
//   {"id": "a" | 7,                                   required; string or number, unique in the
//   file
//    "prompt": "text" | "messages": [{"role", "content"}, ...] | "prompt_ids": [1, 2, 3],
//    optional, as `bitserve generate`: "max_tokens", "temperature", "top_k", "top_p", "min_p",
//    "seed", "stop" (string or list), "stop_token_ids", "ignore_eos", "logprobs" (bool, or a number
//    of alternatives), "top_logprobs", "repetition_penalty", "presence_penalty",
//    "frequency_penalty", "priority"}
// Any other field is an error (a misspelt parameter must not silently fall back to a default).
//
// Output line, one per request:
//   {"id", "text", "token_ids", "finish_reason", "usage": {"prompt_tokens", "completion_tokens"},
//    "logprobs": [{"token_id", "logprob", "top": [{"token_id", "logprob"}]}] when asked,
//    "seed" when sampling (temperature > 0)}
//   {"id", "error": {"code": "INVALID_ARGUMENT", "message"}, "finish_reason": "error"}
// Ids are echoed as given; "7" and 7 are different ids.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "rpc/generation_backend.h"

namespace bitserve::cli {

struct BatchRequest {
  nlohmann::json id;  // string or number, as in the input
  std::string key;    // id.dump(): the identity used for resume and duplicates
  rpc::GenerationInput input;
  rpc::GenerationParams params;
};

// Parses and validates one input line. InvalidArgument naming the field on error; `id` receives the
// line's id whenever it has a valid one (also when another field is wrong), so that the error can
// be recorded under it.
absl::StatusOr<BatchRequest> ParseBatchLine(absl::string_view line,
                                            std::optional<nlohmann::json>* id);

// What a finished request brought back, gathered from its chunks.
struct BatchResult {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<SampleResult> logprobs;
  std::string finish_reason;
  absl::Status status;  // non-OK when finish_reason == "error"
  rpc::Usage usage;
  uint64_t seed = 0;
};

// Records keep their fields in the order documented above (id first), hence ordered_json.
nlohmann::ordered_json ResultRecord(const nlohmann::json& id, const BatchResult& result,
                                    const rpc::GenerationParams& params);
nlohmann::ordered_json ErrorRecord(const nlohmann::json& id, const absl::Status& status);
// One output line, "\n" included. Invalid UTF-8 is replaced (U+FFFD), never an exception.
std::string RecordLine(const nlohmann::ordered_json& record);

// Whether a result needs no rerun: not an error, not cancelled.
bool IsFinishedReason(absl::string_view finish_reason);
bool IsFinishedRecord(const nlohmann::json& record);

struct ExistingOutput {
  absl::flat_hash_set<std::string> done_keys;      // ids (as keys) with a finished record
  absl::flat_hash_set<std::string> recorded_keys;  // ids with any record (errors included)
  int64_t records = 0;                             // complete lines read
  int64_t torn_bytes = 0;                          // bytes of a torn last line cut away (0: none)
};

// Reads an existing output file (absent: nothing done). A last line without its "\n" is what a
// crash in the middle of a write leaves: the file is truncated to the end of the last complete
// line. Any complete line that is not a result record is an error naming the file and the line
// (it is not ours, or it was edited): nothing is overwritten.
absl::StatusOr<ExistingOutput> ScanAndRepairOutput(const std::filesystem::path& output);

}  // namespace bitserve::cli
