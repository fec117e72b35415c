#include "tools/batch_records.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bitserve::cli {

using nlohmann::json;

nlohmann::ordered_json ResultRecord(const json& id, const BatchResult& result,
                                    const rpc::GenerationParams& params) {
  nlohmann::ordered_json out = {{"id", id},
                                {"text", result.text},
                                {"token_ids", result.token_ids},
                                {"finish_reason", result.finish_reason},
                                {"usage",
                                 {{"prompt_tokens", result.usage.prompt_tokens},
                                  {"completion_tokens", result.usage.completion_tokens}}}};
  if (params.logprobs) {
    auto logprobs = nlohmann::ordered_json::array();
    for (const SampleResult& s : result.logprobs) {
      auto top = nlohmann::ordered_json::array();
      for (const TokenLogprob& t : s.top_logprobs) {
        top.push_back({{"token_id", t.token}, {"logprob", t.logprob}});
      }
      logprobs.push_back({{"token_id", s.token}, {"logprob", s.logprob}, {"top", top}});
    }
    out["logprobs"] = std::move(logprobs);
  }
  if (params.sampling.temperature > 0) out["seed"] = result.seed;
  return out;
}

bool IsQueueFull(const absl::Status& status) {
  // The scheduler's queue-full refusal names the queue ("queue full: 256 waiting, limit 256");
  // the other RESOURCE_EXHAUSTED cases (a prompt beyond the KV capacity or the model length) do
  // not, and would never succeed on a retry.
  return status.code() == absl::StatusCode::kResourceExhausted &&
         absl::StrContains(absl::AsciiStrToLower(status.message()), "queue");
}

bool IsPermanentError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnimplemented:
      return true;
    case absl::StatusCode::kResourceExhausted:
      return !IsQueueFull(status);
    default:  // UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ABORTED, INTERNAL, UNKNOWN, auth, ...
      return false;
  }
}

std::string InputHash(absl::string_view line) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : line) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return absl::StrFormat("%016x", h);
}

nlohmann::ordered_json ErrorRecord(const json& id, const absl::Status& status,
                                   absl::string_view input_hash) {
  const bool permanent = IsPermanentError(status);
  nlohmann::ordered_json error = {{"code", absl::StatusCodeToString(status.code())},
                                  {"message", std::string(status.message())},
                                  {"retryable", !permanent}};
  if (permanent) error["input_hash"] = std::string(input_hash);
  return nlohmann::ordered_json{
      {"id", id}, {"error", std::move(error)}, {"finish_reason", "error"}};
}

std::string RecordLine(const nlohmann::ordered_json& record) {
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line += '\n';
  return line;
}

bool IsFinishedReason(absl::string_view finish_reason) {
  return finish_reason != "error" && finish_reason != "cancelled";
}

bool IsFinishedRecord(const json& record) {
  if (record.contains("error")) return false;
  auto it = record.find("finish_reason");
  return it != record.end() && it->is_string() &&
         IsFinishedReason(it->get_ref<const std::string&>());
}

RecordKind ClassifyRecord(const json& record) {
  if (IsFinishedRecord(record)) return RecordKind::kFinished;
  auto error = record.find("error");
  if (error == record.end() || !error->is_object()) return RecordKind::kRetryable;  // cancelled
  auto retryable = error->find("retryable");
  if (retryable != error->end() && retryable->is_boolean()) {
    return retryable->get<bool>() ? RecordKind::kRetryable : RecordKind::kPermanentError;
  }
  // Written before records said: judge by the code (and message) as IsPermanentError does.
  auto code_field = error->find("code");
  auto message_field = error->find("message");
  absl::StatusCode code = absl::StatusCode::kUnknown;
  if (code_field != error->end() && code_field->is_string()) {
    for (int c = 0; c <= 16; ++c) {
      if (absl::StatusCodeToString(static_cast<absl::StatusCode>(c)) ==
          code_field->get<std::string>()) {
        code = static_cast<absl::StatusCode>(c);
      }
    }
  }
  const std::string message = message_field != error->end() && message_field->is_string()
                                  ? message_field->get<std::string>()
                                  : "";
  return IsPermanentError(absl::Status(code, message)) ? RecordKind::kPermanentError
                                                       : RecordKind::kRetryable;
}

absl::StatusOr<ExistingOutput> ScanAndRepairOutput(const std::filesystem::path& output) {
  ExistingOutput existing;
  std::error_code ec;
  if (!std::filesystem::exists(output, ec)) return existing;
  std::ifstream in(output, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat(output.string(), ": cannot read the existing output to resume from it"));
  }
  std::string line;
  int64_t good_bytes = 0;  // end of the last complete line
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (in.eof()) {
      // No "\n" after it: the write of this record was cut short (or the file was edited); the
      // request is run again.
      existing.torn_bytes = static_cast<int64_t>(line.size());
      break;
    }
    const int64_t line_bytes = static_cast<int64_t>(line.size()) + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      good_bytes += line_bytes;
      continue;
    }
    json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool ok_id = record.is_object() && record.contains("id") &&
                       (record["id"].is_string() || record["id"].is_number());
    if (!ok_id || !record.contains("finish_reason")) {
      return absl::DataLossError(absl::StrCat(
          output.string(), ":", line_number,
          ": not a `bitserve batch` result record (expected a JSON object with \"id\" and "
          "\"finish_reason\"); this file cannot be resumed: fix or remove that line, or write to "
          "another --output"));
    }
    ++existing.records;
    std::string key = record["id"].dump(-1, ' ', false, json::error_handler_t::replace);
    switch (ClassifyRecord(record)) {
      case RecordKind::kFinished:
        // A finished record is the best an id can have: any other of its records goes.
        if (!existing.done_keys.insert(key).second) ++existing.superseded;
        if (existing.permanent.erase(key) > 0) ++existing.superseded;
        break;
      case RecordKind::kPermanentError:
        if (existing.done_keys.contains(key) || existing.permanent.contains(key)) {
          ++existing.superseded;
        } else {
          auto hash = record["error"].find("input_hash");
          existing.permanent[key] =
              hash != record["error"].end() && hash->is_string() ? hash->get<std::string>() : "";
        }
        break;
      case RecordKind::kRetryable:
        ++existing.superseded;
        break;
    }
    good_bytes += line_bytes;
  }
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(output.string(), ": read error while resuming"));
  }
  in.close();
  if (existing.torn_bytes > 0) {
    std::filesystem::resize_file(output, static_cast<uintmax_t>(good_bytes), ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat(output.string(), ": cannot cut away the torn last line: ", ec.message()));
    }
  }
  return existing;
}

absl::StatusOr<int64_t> CompactOutput(const std::filesystem::path& output,
                                      const absl::flat_hash_set<std::string>& rerun) {
  std::ifstream in(output, std::ios::binary);
  if (!in)
    return absl::PermissionDeniedError(
        absl::StrCat(output.string(), ": cannot read it to rewrite it"));
  std::filesystem::path temp = output;
  temp += ".rewrite";
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(temp.string(), ": cannot write (the output's folder must be writable)"));
  }
  // Two passes: which record each id keeps (its first finished one, else its first permanent
  // error), then the copy of those lines in their order.
  std::vector<std::string> lines;
  absl::flat_hash_map<std::string, size_t> keep;  // key -> line index
  absl::flat_hash_map<std::string, RecordKind> kept_kind;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object() || !record.contains("id"))
      continue;  // ScanAndRepairOutput refused these
    const std::string key = record["id"].dump(-1, ' ', false, json::error_handler_t::replace);
    const RecordKind kind = ClassifyRecord(record);
    const bool better = kind == RecordKind::kFinished
                            ? !kept_kind.contains(key) || kept_kind[key] != RecordKind::kFinished
                            : kind == RecordKind::kPermanentError && !rerun.contains(key) &&
                                  !kept_kind.contains(key);
    if (better) {
      keep[key] = lines.size();
      kept_kind[key] = kind;
    }
    lines.push_back(std::move(line));
  }
  if (in.bad())
    return absl::DataLossError(absl::StrCat(output.string(), ": read error while rewriting"));
  std::vector<bool> kept(lines.size(), false);
  for (const auto& [key, index] : keep) kept[index] = true;
  int64_t dropped = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (kept[i]) {
      out << lines[i] << '\n';
    } else {
      ++dropped;
    }
  }
  out.flush();
  if (!out) return absl::DataLossError(absl::StrCat(temp.string(), ": write failed"));
  out.close();
  // On disk before it replaces the old file, so that a power loss cannot leave an empty output.
  if (const int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  std::filesystem::rename(temp, output, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot replace ", output.string(), " with its rewrite: ", ec.message()));
  }
  return dropped;
}

}  // namespace bitserve::cli
