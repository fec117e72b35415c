#include "rpc/request_json.h"

#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace bitserve::rpc {
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
absl::Status FillRequest(const json& line, JsonRequest& request) {
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

  GenerationParams& p = request.params;
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

absl::StatusOr<JsonRequest> ParseRequestLine(absl::string_view line, std::optional<json>* id) {
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
  } catch (const json::exception& e) {
    // Not a syntax error but a value the parser cannot hold, e.g. a number beyond double's range
    // ("[json.exception.out_of_range.406] number overflow parsing '8e700'"; found by
    // request_jsonl_fuzz).
    std::string what = e.what();
    const size_t at = what.find("] ");
    return absl::InvalidArgumentError(absl::StrCat(
        "not valid JSON (", at == std::string::npos ? what : what.substr(at + 2), ")"));
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
  JsonRequest request;
  request.id = *it;
  request.key = it->dump(-1, ' ', false, json::error_handler_t::replace);
  *id = request.id;
  absl::Status status = FillRequest(parsed, request);
  if (!status.ok()) return status;
  request.params.request_id = it->is_string() ? it->get<std::string>() : request.key;
  return request;
}

}  // namespace bitserve::rpc
