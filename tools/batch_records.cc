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
namespace {

using nlohmann::json;

// A value as it appears in the line, cut short for messages.
std::string Shown(const json& value) {
  std::string shown = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
  return shown;
}

absl::Status FieldError(absl::string_view field, absl::string_view expected, const json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat("\"", field, "\": expected ", expected, ", got ", Shown(got)));
}

// An integer in [lo, hi]; floats (even 3.0) are not integers here.
absl::StatusOr<int64_t> GetInt(const json& value, absl::string_view field, int64_t lo, int64_t hi,
                               absl::string_view expected) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v) >= lo) {
      return static_cast<int64_t>(v);
    }
  } else if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v >= lo && v <= hi) return v;
  }
  return FieldError(field, expected, value);
}

absl::StatusOr<float> GetFloat(const json& value, absl::string_view field) {
  if (!value.is_number()) return FieldError(field, "a number", value);
  return value.get<float>();
}

absl::StatusOr<std::vector<int32_t>> GetIds(const json& value, absl::string_view field) {
  if (!value.is_array()) return FieldError(field, "a list of token ids", value);
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    absl::StatusOr<int64_t> id =
        GetInt(value[i], absl::StrCat(field, "[", i, "]"), 0, std::numeric_limits<int32_t>::max(),
               "a non-negative token id");
    if (!id.ok()) return id.status();
    ids.push_back(static_cast<int32_t>(*id));
  }
  return ids;
}

absl::StatusOr<std::vector<ChatMessage>> GetMessages(const json& value) {
  if (!value.is_array() || value.empty()) {
    return FieldError("messages", "a non-empty list of {\"role\", \"content\"}", value);
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < value.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const json& m = value[i];
    if (!m.is_object()) return FieldError(field, "an object {\"role\", \"content\"}", m);
    for (const auto& [key, v] : m.items()) {
      if (key != "role" && key != "content") {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", field, "\": unknown field \"", key, "\" (expected role, content)"));
      }
    }
    ChatMessage message;
    for (auto [name, target] : {std::pair{"role", &message.role}, {"content", &message.content}}) {
      auto it = m.find(name);
      if (it == m.end() || !it->is_string()) {
        return FieldError(absl::StrCat(field, ".", name), "a string", it == m.end() ? json() : *it);
      }
      *target = it->get<std::string>();
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

absl::StatusOr<std::vector<std::string>> GetStop(const json& value) {
  if (value.is_string()) return std::vector<std::string>{value.get<std::string>()};
  if (!value.is_array()) return FieldError("stop", "a string or a list of strings", value);
  std::vector<std::string> stop;
  for (const json& s : value) {
    if (!s.is_string()) return FieldError("stop", "a string or a list of strings", value);
    stop.push_back(s.get<std::string>());
  }
  return stop;
}

constexpr const char* kKnownFields[] = {"id",
                                        "prompt",
                                        "messages",
                                        "prompt_ids",
                                        "max_tokens",
                                        "temperature",
                                        "top_k",
                                        "top_p",
                                        "min_p",
                                        "seed",
                                        "stop",
                                        "stop_token_ids",
                                        "ignore_eos",
                                        "logprobs",
                                        "top_logprobs",
                                        "repetition_penalty",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "priority"};

// The fields after "id", into `request`.
absl::Status FillRequest(const json& line, BatchRequest& request) {
  for (const auto& [key, value] : line.items()) {
    bool known = false;
    for (const char* name : kKnownFields) known = known || key == name;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", key, "\" (expected id, prompt | messages | prompt_ids, and ",
          "sampling parameters as for `bitserve generate`: max_tokens, temperature, top_k, top_p, ",
          "min_p, seed, stop, stop_token_ids, ignore_eos, logprobs, top_logprobs, ",
          "repetition_penalty, presence_penalty, frequency_penalty, priority)"));
    }
  }
  const int inputs =
      line.contains("prompt") + line.contains("messages") + line.contains("prompt_ids");
  if (inputs != 1) {
    return absl::InvalidArgumentError(
        inputs == 0 ? "one of \"prompt\", \"messages\" or \"prompt_ids\" is required"
                    : "give only one of \"prompt\", \"messages\" and \"prompt_ids\"");
  }
  if (auto it = line.find("prompt"); it != line.end()) {
    if (!it->is_string()) return FieldError("prompt", "a string", *it);
    request.input = rpc::TextInput{it->get<std::string>()};
  } else if (auto it = line.find("messages"); it != line.end()) {
    absl::StatusOr<std::vector<ChatMessage>> messages = GetMessages(*it);
    if (!messages.ok()) return messages.status();
    request.input = rpc::ChatInput{*std::move(messages)};
  } else {
    absl::StatusOr<std::vector<int32_t>> ids = GetIds(line.at("prompt_ids"), "prompt_ids");
    if (!ids.ok()) return ids.status();
    if (ids->empty()) return FieldError("prompt_ids", "at least one token id", line["prompt_ids"]);
    request.input = rpc::TokenInput{*std::move(ids)};
  }

  rpc::GenerationParams& p = request.params;
  SamplingParams& s = p.sampling;
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  constexpr int64_t kIntMin = std::numeric_limits<int32_t>::min();
  for (auto [name, target] : {std::pair{"temperature", &s.temperature},
                              {"top_p", &s.top_p},
                              {"min_p", &s.min_p},
                              {"repetition_penalty", &s.repetition_penalty},
                              {"presence_penalty", &s.presence_penalty},
                              {"frequency_penalty", &s.frequency_penalty}}) {
    if (auto it = line.find(name); it != line.end()) {
      absl::StatusOr<float> v = GetFloat(*it, name);
      if (!v.ok()) return v.status();
      *target = *v;
    }
  }
  for (auto [name, target, lo, expected] :
       {std::tuple{"max_tokens", &p.max_new_tokens, int64_t{0}, "a non-negative integer"},
        {"top_k", &s.top_k, int64_t{0}, "a non-negative integer"},
        {"priority", &p.priority, kIntMin, "an integer"}}) {
    if (auto it = line.find(name); it != line.end()) {
      absl::StatusOr<int64_t> v = GetInt(*it, name, lo, kIntMax, expected);
      if (!v.ok()) return v.status();
      *target = static_cast<int>(*v);
    }
  }
  if (auto it = line.find("seed"); it != line.end()) {
    if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<int64_t>() < 0)) {
      return FieldError("seed", "a non-negative integer", *it);
    }
    s.seed = it->get<uint64_t>();
  }
  if (auto it = line.find("stop"); it != line.end()) {
    absl::StatusOr<std::vector<std::string>> stop = GetStop(*it);
    if (!stop.ok()) return stop.status();
    p.stop_strings = *std::move(stop);
  }
  if (auto it = line.find("stop_token_ids"); it != line.end()) {
    absl::StatusOr<std::vector<int32_t>> ids = GetIds(*it, "stop_token_ids");
    if (!ids.ok()) return ids.status();
    p.stop_token_ids.assign(ids->begin(), ids->end());
  }
  if (auto it = line.find("ignore_eos"); it != line.end()) {
    if (!it->is_boolean()) return FieldError("ignore_eos", "true or false", *it);
    p.ignore_eos = it->get<bool>();
  }
  // logprobs: true/false, or (as `generate --logprobs N` and OpenAI's completions API) a number of
  // alternatives, which turns logprobs on. top_logprobs > 0 asks for logprobs too.
  std::optional<int64_t> alternatives;
  bool logprobs_off = false;
  if (auto it = line.find("logprobs"); it != line.end()) {
    if (it->is_boolean()) {
      p.logprobs = it->get<bool>();
      logprobs_off = !p.logprobs;
    } else {
      absl::StatusOr<int64_t> n =
          GetInt(*it, "logprobs", 0, kIntMax, "true, false or a number of alternatives");
      if (!n.ok()) return n.status();
      p.logprobs = true;
      alternatives = *n;
    }
  }
  if (auto it = line.find("top_logprobs"); it != line.end()) {
    absl::StatusOr<int64_t> n = GetInt(*it, "top_logprobs", 0, kIntMax, "a non-negative integer");
    if (!n.ok()) return n.status();
    if (alternatives && *alternatives != *n) {
      return absl::InvalidArgumentError(absl::StrCat("\"logprobs\": ", *alternatives,
                                                     " and \"top_logprobs\": ", *n, " disagree"));
    }
    if (logprobs_off && *n > 0) {
      return absl::InvalidArgumentError("\"top_logprobs\" needs \"logprobs\": true");
    }
    alternatives = *n;
    if (*n > 0) p.logprobs = true;
  }
  if (alternatives) s.top_logprobs = static_cast<int>(*alternatives);
  return s.Validate();
}

}  // namespace

absl::StatusOr<BatchRequest> ParseBatchLine(absl::string_view line, std::optional<json>* id) {
  id->reset();
  json parsed;
  try {
    parsed = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 3: ..." -> from "column".
    std::string what = e.what();
    const size_t at = what.find("column");
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON (", at == std::string::npos ? what : what.substr(at), ")"));
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got ", Shown(parsed)));
  }
  auto it = parsed.find("id");
  if (it == parsed.end()) return absl::InvalidArgumentError("\"id\" is missing");
  if (!(it->is_string() || it->is_number()) ||
      (it->is_string() && it->get_ref<const std::string&>().empty())) {
    return FieldError("id", "a non-empty string or a number", *it);
  }
  BatchRequest request;
  request.id = *it;
  request.key = it->dump(-1, ' ', false, json::error_handler_t::replace);
  *id = request.id;
  absl::Status status = FillRequest(parsed, request);
  if (!status.ok()) return status;
  request.params.request_id = it->is_string() ? it->get<std::string>() : request.key;
  return request;
}

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
  return nlohmann::ordered_json{{"id", id}, {"error", std::move(error)}, {"finish_reason", "error"}};
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
      if (absl::StatusCodeToString(static_cast<absl::StatusCode>(c)) == code_field->get<std::string>()) {
        code = static_cast<absl::StatusCode>(c);
      }
    }
  }
  const std::string message =
      message_field != error->end() && message_field->is_string() ? message_field->get<std::string>() : "";
  return IsPermanentError(absl::Status(code, message)) ? RecordKind::kPermanentError : RecordKind::kRetryable;
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
          existing.permanent[key] = hash != record["error"].end() && hash->is_string() ? hash->get<std::string>() : "";
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
  if (!in) return absl::PermissionDeniedError(absl::StrCat(output.string(), ": cannot read it to rewrite it"));
  std::filesystem::path temp = output;
  temp += ".rewrite";
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat(temp.string(), ": cannot write (the output's folder must be writable)"));
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
    if (!record.is_object() || !record.contains("id")) continue;  // ScanAndRepairOutput refused these
    const std::string key = record["id"].dump(-1, ' ', false, json::error_handler_t::replace);
    const RecordKind kind = ClassifyRecord(record);
    const bool better = kind == RecordKind::kFinished
                            ? !kept_kind.contains(key) || kept_kind[key] != RecordKind::kFinished
                            : kind == RecordKind::kPermanentError && !rerun.contains(key) && !kept_kind.contains(key);
    if (better) {
      keep[key] = lines.size();
      kept_kind[key] = kind;
    }
    lines.push_back(std::move(line));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(output.string(), ": read error while rewriting"));
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
