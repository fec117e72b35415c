#include "rpc/openai_api.h"

#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace bitserve::rpc::openai {
namespace {

using nlohmann::json;
using Error = std::optional<ApiError>;

std::string Shown(const json& value) {
  std::string shown = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
  return shown;
}

ApiError Invalid(const std::string& param, const std::string& message) {
  ApiError e;
  e.message = message;
  e.param = param;
  return e;
}

ApiError Expected(const std::string& param, const std::string& expected, const json& got) {
  return Invalid(param, absl::StrCat("'", param, "': expected ", expected, ", got ", Shown(got)));
}

ApiError Unsupported(const std::string& param, const std::string& why) {
  return Invalid(param, absl::StrCat("'", param, "' is not supported by bitserve", why));
}

// An integer in [lo, hi]; 3.0 is not an integer.
Error GetInt(const json& v, const std::string& param, int64_t lo, int64_t hi,
             const std::string& expected, int64_t* out) {
  if (v.is_number_unsigned() && v.get<uint64_t>() <= static_cast<uint64_t>(hi) &&
      static_cast<int64_t>(v.get<uint64_t>()) >= lo) {
    *out = static_cast<int64_t>(v.get<uint64_t>());
    return std::nullopt;
  }
  if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() >= lo &&
      v.get<int64_t>() <= hi) {
    *out = v.get<int64_t>();
    return std::nullopt;
  }
  return Expected(param, expected, v);
}

Error GetFloat(const json& v, const std::string& param, float lo, float hi, float* out) {
  if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi)) {
    return Expected(param, absl::StrCat("a number in [", lo, ", ", hi, "]"), v);
  }
  *out = v.get<float>();
  return std::nullopt;
}

Error GetIds(const json& v, const std::string& param, std::vector<int32_t>* out) {
  out->clear();
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t id = 0;
    if (Error e = GetInt(v[i], param, 0, std::numeric_limits<int32_t>::max(),
                         "token ids (non-negative integers)", &id)) {
      return e;
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

bool IsIdList(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const json& x : v) {
    if (!x.is_number_integer()) return false;
  }
  return true;
}

// prompt: "text" | [ids] | ["text", ...] | [[ids], ...].
Error GetPrompts(const json& v, std::vector<GenerationInput>* prompts) {
  const std::string expected = "a string, a list of token ids, or a list of either";
  if (v.is_string()) {
    prompts->push_back(TextInput{v.get<std::string>()});
    return std::nullopt;
  }
  if (IsIdList(v)) {
    TokenInput t;
    if (Error e = GetIds(v, "prompt", &t.ids)) return e;
    prompts->push_back(std::move(t));
    return std::nullopt;
  }
  if (!v.is_array() || v.empty()) return Expected("prompt", expected, v);
  for (const json& p : v) {
    if (p.is_string()) {
      prompts->push_back(TextInput{p.get<std::string>()});
    } else if (IsIdList(p)) {
      TokenInput t;
      if (Error e = GetIds(p, "prompt", &t.ids)) return e;
      prompts->push_back(std::move(t));
    } else {
      return Expected("prompt", expected, v);
    }
  }
  return std::nullopt;
}

// content: "text" | [{"type": "text", "text": "..."}, ...] (the parts joined).
Error GetContent(const json& v, const std::string& param, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return std::nullopt;
  }
  if (!v.is_array()) return Expected(param, "a string or a list of text parts", v);
  out->clear();
  for (const json& part : v) {
    auto type = part.is_object() ? part.find("type") : part.end();
    if (!part.is_object() || type == part.end() || *type != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      if (part.is_object() && type != part.end() && type->is_string() && *type != "text") {
        return Unsupported(param, absl::StrCat(": content parts of type '",
                                               type->get<std::string>(), "' (only text)"));
      }
      return Expected(param, "text parts {\"type\": \"text\", \"text\": \"...\"}", part);
    }
    *out += part["text"].get<std::string>();
  }
  return std::nullopt;
}

Error GetMessages(const json& v, std::vector<ChatMessage>* messages) {
  if (!v.is_array() || v.empty()) {
    return Expected("messages", "a non-empty list of {\"role\", \"content\"}", v);
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string param = absl::StrCat("messages[", i, "]");
    const json& m = v[i];
    if (!m.is_object()) return Expected(param, "an object {\"role\", \"content\"}", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return Expected(param + ".role", "a string", role == m.end() ? json() : *role);
    }
    ChatMessage message;
    message.role = role->get<std::string>();
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name
    if (message.role == "tool" || message.role == "function") {
      return Unsupported(param + ".role",
                         absl::StrCat(": '", message.role, "' messages (no tools)"));
    }
    if (message.role != "system" && message.role != "user" && message.role != "assistant") {
      return Invalid(param + ".role",
                     absl::StrCat("'", param, ".role': expected system, developer, user or ",
                                  "assistant, got ", Shown(*role)));
    }
    for (const char* tool : {"tool_calls", "function_call"}) {
      if (m.contains(tool) && !m[tool].is_null()) {
        return Unsupported(absl::StrCat(param, ".", tool), " (no tools)");
      }
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      return Expected(param + ".content", "a string or a list of text parts",
                      content == m.end() ? json() : *content);
    }
    if (Error e = GetContent(*content, param + ".content", &message.content)) return e;
    messages->push_back(std::move(message));
  }
  return std::nullopt;
}

Error GetStop(const json& v, std::vector<std::string>* stop) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) {
    stop->push_back(v.get<std::string>());
    return std::nullopt;
  }
  if (!v.is_array()) return Expected("stop", "a string or a list of strings", v);
  for (const json& s : v) {
    if (!s.is_string()) return Expected("stop", "a string or a list of strings", v);
    stop->push_back(s.get<std::string>());
  }
  return std::nullopt;
}

// Parameters read as given, accepted and ignored, or refused.
constexpr const char* kCommon[] = {"model",
                                   "max_tokens",
                                   "temperature",
                                   "top_p",
                                   "n",
                                   "stop",
                                   "seed",
                                   "logprobs",
                                   "presence_penalty",
                                   "frequency_penalty",
                                   "stream",
                                   "stream_options",
                                   "top_k",
                                   "min_p",
                                   "repetition_penalty",
                                   "ignore_eos",
                                   "return_token_ids",
                                   "stop_token_ids",
                                   "logit_bias",
                                   "user",
                                   "metadata",
                                   "store",
                                   "service_tier"};
constexpr const char* kChatOnly[] = {"messages",
                                     "max_completion_tokens",
                                     "top_logprobs",
                                     "tools",
                                     "tool_choice",
                                     "functions",
                                     "function_call",
                                     "parallel_tool_calls",
                                     "response_format",
                                     "modalities",
                                     "audio",
                                     "prediction",
                                     "reasoning_effort",
                                     "web_search_options"};
constexpr const char* kCompletionOnly[] = {"prompt", "echo", "suffix", "best_of"};

Error CheckKnown(Endpoint endpoint, const json& body) {
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (const char* k : kCommon) known = known || key == k;
    if (endpoint == Endpoint::kChatCompletions) {
      for (const char* k : kChatOnly) known = known || key == k;
    } else {
      for (const char* k : kCompletionOnly) known = known || key == k;
    }
    if (!known) {
      return Invalid(key, absl::StrCat("unrecognized request argument supplied: '", key, "'"));
    }
  }
  return std::nullopt;
}

// What bitserve cannot do, each a 400 naming the parameter (null / empty / default values pass).
Error CheckUnsupported(const json& body, int n) {
  const auto set = [&](const char* key) {
    auto it = body.find(key);
    return it != body.end() && !it->is_null() && !(it->is_array() && it->empty()) &&
           !(it->is_object() && it->empty()) && !(it->is_boolean() && !it->get<bool>()) &&
           !(it->is_string() && it->get_ref<const std::string&>().empty());
  };
  for (const char* key : {"tools", "functions"}) {
    if (set(key)) return Unsupported(key, " (no tool calling)");
  }
  for (const char* key : {"tool_choice", "function_call"}) {
    if (set(key) && body[key] != "none" && body[key] != "auto") {
      return Unsupported(key, " (no tool calling)");
    }
  }
  if (set("logit_bias")) return Unsupported("logit_bias", "");
  if (set("echo")) return Unsupported("echo", "");
  if (set("suffix")) return Unsupported("suffix", "");
  if (set("audio")) return Unsupported("audio", " (text only)");
  if (set("prediction")) return Unsupported("prediction", "");
  if (set("web_search_options")) return Unsupported("web_search_options", "");
  if (set("modalities")) {
    const json& m = body["modalities"];
    if (!m.is_array() || m.size() != 1 || m[0] != "text") {
      return Unsupported("modalities", " (text only)");
    }
  }
  if (set("response_format")) {
    const json& f = body["response_format"];
    if (!f.is_object() || !f.contains("type") || f["type"] != "text") {
      return Unsupported("response_format", " (only {\"type\": \"text\"})");
    }
  }
  if (body.contains("best_of") && !body["best_of"].is_null() && body["best_of"] != n) {
    return Unsupported("best_of", " other than n");
  }
  return std::nullopt;
}

Error Fill(Endpoint endpoint, const json& body, int max_model_len, ParsedRequest* r) {
  if (Error e = CheckKnown(endpoint, body)) return e;
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  if (auto it = body.find("n"); it != body.end() && !it->is_null()) {
    int64_t n = 0;
    if (Error e = GetInt(*it, "n", 1, 16, "an integer in [1, 16]", &n)) return e;
    r->n = static_cast<int>(n);
  }
  if (Error e = CheckUnsupported(body, r->n)) return e;

  GenerationParams& p = r->params;
  SamplingParams& s = p.sampling;
  if (endpoint == Endpoint::kChatCompletions) {
    auto it = body.find("messages");
    if (it == body.end()) return Invalid("messages", "'messages' is required");
    ChatInput chat;
    if (Error e = GetMessages(*it, &chat.messages)) return e;
    r->prompts.push_back(std::move(chat));
    p.max_new_tokens = std::max(max_model_len, 1);  // as many as fit (the backend caps it)
  } else {
    auto it = body.find("prompt");
    if (it == body.end()) return Invalid("prompt", "'prompt' is required");
    if (Error e = GetPrompts(*it, &r->prompts)) return e;
    p.max_new_tokens = 16;  // OpenAI's default for completions
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (auto it = body.find(key); it != body.end() && !it->is_null()) {
      int64_t v = 0;
      if (Error e = GetInt(*it, key, 1, kIntMax, "a positive integer", &v)) return e;
      p.max_new_tokens = static_cast<int>(v);
    }
  }
  s.temperature = 1.0f;  // OpenAI's default
  for (auto [name, target, lo, hi] :
       {std::tuple{"temperature", &s.temperature, 0.0f, 2.0f},
        {"top_p", &s.top_p, 0.0f, 1.0f},
        {"min_p", &s.min_p, 0.0f, 1.0f},
        {"presence_penalty", &s.presence_penalty, -2.0f, 2.0f},
        {"frequency_penalty", &s.frequency_penalty, -2.0f, 2.0f},
        {"repetition_penalty", &s.repetition_penalty, 0.01f, 100.0f}}) {
    if (auto it = body.find(name); it != body.end() && !it->is_null()) {
      if (Error e = GetFloat(*it, name, lo, hi, target)) return e;
    }
  }
  if (s.top_p <= 0.0f) return Invalid("top_p", "'top_p' must be in (0, 1]");
  if (auto it = body.find("top_k"); it != body.end() && !it->is_null()) {
    int64_t v = 0;
    // vLLM's -1 (and 0) mean off.
    if (Error e = GetInt(*it, "top_k", -1, kIntMax, "an integer >= -1", &v)) return e;
    s.top_k = v < 0 ? 0 : static_cast<int>(v);
  }
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    int64_t v = 0;
    if (Error e = GetInt(*it, "seed", std::numeric_limits<int64_t>::min(),
                         std::numeric_limits<int64_t>::max(), "an integer", &v)) {
      return e;
    }
    s.seed = static_cast<uint64_t>(v);
  }
  if (auto it = body.find("stop"); it != body.end()) {
    if (Error e = GetStop(*it, &p.stop_strings)) return e;
  }
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return Expected("stop_token_ids", "a list of token ids", *it);
    std::vector<int32_t> ids;
    if (Error e = GetIds(*it, "stop_token_ids", &ids)) return e;
    p.stop_token_ids.assign(ids.begin(), ids.end());
  }
  if (auto it = body.find("ignore_eos"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return Expected("ignore_eos", "true or false", *it);
    p.ignore_eos = it->get<bool>();
  }
  if (auto it = body.find("return_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return Expected("return_token_ids", "true or false", *it);
    r->return_token_ids = it->get<bool>();
  }
  // logprobs: chat: a boolean with top_logprobs alternatives (0..20); completions: the number of
  // alternatives (0..20; OpenAI allows 5, vLLM 20).
  if (auto it = body.find("logprobs"); it != body.end() && !it->is_null()) {
    if (endpoint == Endpoint::kChatCompletions) {
      if (!it->is_boolean()) return Expected("logprobs", "true or false", *it);
      p.logprobs = it->get<bool>();
    } else {
      int64_t v = 0;
      if (Error e = GetInt(*it, "logprobs", 0, 20, "an integer in [0, 20]", &v)) return e;
      p.logprobs = true;
      s.top_logprobs = static_cast<int>(v);
      r->completion_logprobs = static_cast<int>(v);
    }
  }
  if (auto it = body.find("top_logprobs"); it != body.end() && !it->is_null()) {
    int64_t v = 0;
    if (Error e = GetInt(*it, "top_logprobs", 0, 20, "an integer in [0, 20]", &v)) return e;
    if (!p.logprobs) {
      return Invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    s.top_logprobs = static_cast<int>(v);
  }
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return Expected("stream", "true or false", *it);
    r->stream = it->get<bool>();
  }
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!r->stream) {
      return Invalid("stream_options", "'stream_options' is only allowed with 'stream': true");
    }
    if (!it->is_object()) return Expected("stream_options", "an object", *it);
    for (const auto& [key, value] : it->items()) {
      if (key == "include_usage") {
        if (!value.is_boolean())
          return Expected("stream_options.include_usage", "true or false", value);
        r->include_usage = value.get<bool>();
      } else if (key != "include_obfuscation") {
        return Invalid("stream_options", absl::StrCat("unrecognized stream option '", key, "'"));
      }
    }
  }
  if (absl::Status v = s.Validate(); !v.ok()) return Invalid("", std::string(v.message()));
  return std::nullopt;
}

json LogprobBytes(const std::string& bytes) {
  json out = json::array();
  for (unsigned char c : bytes) out.push_back(static_cast<int>(c));
  return out;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}.
json ChatLogprobs(const std::vector<SampleResult>& results, const TokenBytesFn& token_bytes) {
  json content = json::array();
  for (const SampleResult& r : results) {
    const std::string bytes = token_bytes(r.token);
    json top = json::array();
    for (const TokenLogprob& t : r.top_logprobs) {
      const std::string b = token_bytes(t.token);
      top.push_back({{"token", b}, {"logprob", t.logprob}, {"bytes", LogprobBytes(b)}});
    }
    content.push_back({{"token", bytes},
                       {"logprob", r.logprob},
                       {"bytes", LogprobBytes(bytes)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}.
json CompletionLogprobs(const std::vector<SampleResult>& results, const TokenBytesFn& token_bytes,
                        size_t offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const SampleResult& r : results) {
    const std::string bytes = token_bytes(r.token);
    tokens.push_back(bytes);
    token_logprobs.push_back(r.logprob);
    json alternatives = json::object();
    for (const TokenLogprob& t : r.top_logprobs) alternatives[token_bytes(t.token)] = t.logprob;
    top.push_back(std::move(alternatives));
    offsets.push_back(offset);
    offset += bytes.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

const char* Object(const ParsedRequest& r, bool chunk) {
  if (r.endpoint == Endpoint::kChatCompletions) {
    return chunk ? "chat.completion.chunk" : "chat.completion";
  }
  return "text_completion";
}

json Envelope(const ParsedRequest& r, const std::string& id, int64_t created,
              const std::string& model, bool chunk) {
  return {{"id", id},
          {"object", Object(r, chunk)},
          {"created", created},
          {"model", model},
          {"system_fingerprint", nullptr}};
}

}  // namespace

json ApiError::ToJson() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

ApiError ErrorFromStatus(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404;
      e.type = "not_found_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      // The scheduler's "queue full: ..." is worth a retry; the rest (a prompt beyond
      // max_model_len or the KV capacity) is not: OpenAI answers those 400.
      if (absl::StartsWith(status.message(), "queue full")) {
        e.status = 429;
        e.type = "rate_limit_error";
      } else {
        e.status = 400;
        e.code = "context_length_exceeded";
      }
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "service_unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.status = 504;
      e.type = "timeout";
      break;
    default:
      e.status = 500;
      e.type = "internal_error";
  }
  return e;
}

std::variant<ParsedRequest, ApiError> ParseRequest(Endpoint endpoint, const std::string& body,
                                                   const std::string& served_model,
                                                   int max_model_len) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Invalid("", "the request body is not valid JSON");
  }
  if (!parsed.is_object()) return Invalid("", "the request body must be a JSON object");
  if (auto it = parsed.find("model"); it != parsed.end() && !it->is_null()) {
    if (!it->is_string()) return Expected("model", "a string", *it);
    if (it->get<std::string>() != served_model) {
      ApiError e = Invalid(
          "model", absl::StrCat("The model '", it->get<std::string>(),
                                "' does not exist; this server serves '", served_model, "'"));
      e.status = 404;
      e.code = "model_not_found";
      return e;
    }
  }
  ParsedRequest r;
  r.endpoint = endpoint;
  if (Error e = Fill(endpoint, parsed, max_model_len, &r)) return *e;
  return r;
}

std::string FinishReason(const std::string& backend_reason) {
  if (backend_reason == "eos" || backend_reason == "stop") return "stop";
  if (backend_reason == "cancelled") return "abort";
  return backend_reason;  // length, error
}

Usage TotalUsage(const ParsedRequest& request, const std::vector<ChoiceResult>& choices) {
  Usage total;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i % request.n == 0) total.prompt_tokens += choices[i].usage.prompt_tokens;
    total.completion_tokens += choices[i].usage.completion_tokens;
  }
  return total;
}

json CompletionResponse(const ParsedRequest& request, const std::string& id, int64_t created,
                        const std::string& model, const std::vector<ChoiceResult>& choices,
                        const TokenBytesFn& token_bytes) {
  json out = Envelope(request, id, created, model, /*chunk=*/false);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", FinishReason(c.finish_reason)}};
    const bool logprobs = request.params.logprobs;
    if (request.endpoint == Endpoint::kChatCompletions) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
      choice["logprobs"] = logprobs ? ChatLogprobs(c.logprobs, token_bytes) : json(nullptr);
    } else {
      choice["text"] = c.text;
      choice["logprobs"] =
          logprobs ? CompletionLogprobs(c.logprobs, token_bytes, 0) : json(nullptr);
    }
    if (request.return_token_ids) choice["token_ids"] = c.token_ids;
    list.push_back(std::move(choice));
  }
  out["choices"] = std::move(list);
  out["usage"] = UsageJson(TotalUsage(request, choices));
  return out;
}

json StreamChunk(const ParsedRequest& request, const std::string& id, int64_t created,
                 const std::string& model, int index, const std::string& text,
                 const std::vector<SampleResult>& logprobs, const std::string& finish_reason,
                 bool role_only, const TokenBytesFn& token_bytes,
                 const std::vector<int32_t>& token_ids) {
  json out = Envelope(request, id, created, model, /*chunk=*/true);
  json choice = {
      {"index", index},
      {"finish_reason", finish_reason.empty() ? json(nullptr) : json(FinishReason(finish_reason))}};
  const bool with_logprobs = request.params.logprobs && !logprobs.empty();
  if (request.endpoint == Endpoint::kChatCompletions) {
    if (role_only) {
      choice["delta"] = {{"role", "assistant"}, {"content", ""}};
    } else if (!finish_reason.empty() && text.empty()) {
      choice["delta"] = json::object();
    } else {
      choice["delta"] = {{"content", text}};
    }
    choice["logprobs"] = with_logprobs ? ChatLogprobs(logprobs, token_bytes) : json(nullptr);
  } else {
    choice["text"] = text;
    choice["logprobs"] =
        with_logprobs ? CompletionLogprobs(logprobs, token_bytes, 0) : json(nullptr);
  }
  if (request.return_token_ids && !role_only) choice["token_ids"] = token_ids;
  out["choices"] = json::array({std::move(choice)});
  if (request.include_usage) out["usage"] = nullptr;
  return out;
}

json UsageChunk(const ParsedRequest& request, const std::string& id, int64_t created,
                const std::string& model, const Usage& usage) {
  json out = Envelope(request, id, created, model, /*chunk=*/true);
  out["choices"] = json::array();
  out["usage"] = UsageJson(usage);
  return out;
}

}  // namespace bitserve::rpc::openai
