// The JSONL records of `bitserve batch`: output lines (results and errors), and the scan of an
// existing output file that makes a job resumable. Input lines are rpc/request_json.h's.
//
// Output line, exactly one per id of the input (a rerun replaces what it runs again):
//   {"id", "text", "token_ids", "finish_reason", "usage": {"prompt_tokens", "completion_tokens"},
//    "logprobs": [{"token_id", "logprob", "top": [{"token_id", "logprob"}]}] when asked,
//    "seed" when sampling (temperature > 0)}
//   {"id", "error": {"code": "INVALID_ARGUMENT", "message", "retryable": false,
//                    "input_hash": "<16 hex digits>"}, "finish_reason": "error"}
// An error is permanent ("retryable": false) when the same line would fail the same way again (a
// bad parameter, a prompt that can never fit, a model without a tokenizer): a rerun keeps its
// record and does not run the line, unless the line was edited since ("input_hash", of the line
// as read, differs). Retryable errors (the server unavailable or busy, a worker lost, a deadline,
// an internal error) are retried within the run, and a record written after the last try is
// replaced by the next run. Ids are echoed as given; "7" and 7 are different ids.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "rpc/generation_backend.h"
#include "rpc/request_json.h"

namespace bitserve::cli {

// An input line (rpc/request_json.h).
using BatchRequest = rpc::JsonRequest;

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

// RESOURCE_EXHAUSTED because the server's waiting queue is full (retry later), as opposed to a
// request that can never fit (prompt beyond the KV capacity).
bool IsQueueFull(const absl::Status& status);
// Whether the same request fails the same way on every try (see the top of this file).
bool IsPermanentError(const absl::Status& status);
// The "input_hash" of an input line: FNV-1a 64 of its bytes, 16 hex digits.
std::string InputHash(absl::string_view line);

// Records keep their fields in the order documented above (id first), hence ordered_json.
nlohmann::ordered_json ResultRecord(const nlohmann::json& id, const BatchResult& result,
                                    const rpc::GenerationParams& params);
// `input_hash` goes into permanent errors only.
nlohmann::ordered_json ErrorRecord(const nlohmann::json& id, const absl::Status& status,
                                   absl::string_view input_hash);
// One output line, "\n" included. Invalid UTF-8 is replaced (U+FFFD), never an exception.
std::string RecordLine(const nlohmann::ordered_json& record);

// Whether a result needs no rerun: not an error, not cancelled.
bool IsFinishedReason(absl::string_view finish_reason);
bool IsFinishedRecord(const nlohmann::json& record);

// What a record means for a rerun.
enum class RecordKind { kFinished, kPermanentError, kRetryable };
// Records written before errors said "retryable" are classified by their code.
RecordKind ClassifyRecord(const nlohmann::json& record);

struct ExistingOutput {
  absl::flat_hash_set<std::string> done_keys;  // ids (as keys) with a finished record
  // Ids with a permanent error record (and no finished one), with the record's input_hash
  // ("" for records of older versions without one).
  absl::flat_hash_map<std::string, std::string> permanent;
  int64_t records = 0;     // complete lines read
  int64_t torn_bytes = 0;  // bytes of a torn last line cut away (0: none)
  // Records that a rerun replaces: retryable errors, cancelled results, and every record of an
  // id beyond its best one (files written by older versions kept one per attempt).
  int64_t superseded = 0;
};

// Reads an existing output file (absent: nothing done). A last line without its "\n" is what a
// crash in the middle of a write leaves: the file is truncated to the end of the last complete
// line. Any complete line that is not a result record is an error naming the file and the line
// (it is not ours, or it was edited): nothing is overwritten.
absl::StatusOr<ExistingOutput> ScanAndRepairOutput(const std::filesystem::path& output);

// Rewrites the output with one record per id: its finished record, else its permanent error
// unless the id is in `rerun`; retryable records go. The new file replaces the old one by rename
// (a crash leaves either). Returns the number of records dropped.
absl::StatusOr<int64_t> CompactOutput(const std::filesystem::path& output,
                                      const absl::flat_hash_set<std::string>& rerun);

}  // namespace bitserve::cli
