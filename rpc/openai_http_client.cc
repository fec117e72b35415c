#include "rpc/openai_http_client.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace bitserve::rpc {

using nlohmann::json;

struct OpenAiHttpBackend::Shared {
  std::string base_url;  // scheme://host:port
  OpenAiHttpClientOptions options;
  ModelSummary summary;

  std::mutex mu;
  std::condition_variable cv;
  uint64_t next_id = 1;
  std::map<uint64_t, std::shared_ptr<std::atomic<bool>>> running;  // id -> cancelled
  bool closing = false;

  std::unique_ptr<httplib::Client> NewClient() const {
    auto client = options.cert_file.empty() ? std::make_unique<httplib::Client>(base_url)
                                            : std::make_unique<httplib::Client>(
                                                  base_url, options.cert_file, options.key_file);
    if (!options.ca_file.empty()) client->set_ca_cert_path(options.ca_file);
    client->set_connection_timeout(10);
    client->set_read_timeout(3600);  // a long prefill sends nothing for a while
    client->set_write_timeout(60);
    if (!options.api_key.empty()) client->set_bearer_token_auth(options.api_key);
    return client;
  }
};

absl::Status StatusFromHttp(int http_status, const std::string& message) {
  const std::string text = absl::StrCat("HTTP ", http_status, ": ", message);
  switch (http_status) {
    case 400:
      return absl::InvalidArgumentError(text);
    case 401:
      return absl::UnauthenticatedError(text);
    case 403:
      return absl::PermissionDeniedError(text);
    case 404:
      return absl::NotFoundError(text);
    case 429:
      return absl::ResourceExhaustedError(text);
    case 503:
      return absl::UnavailableError(text);
    default:
      return absl::UnknownError(text);
  }
}

namespace {

// The message of an OpenAI error body ({"error": {"message": ...}}), or the body itself.
std::string ErrorMessage(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error")) {
    const json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      return e["message"].get<std::string>();
    }
    if (e.is_string()) return e.get<std::string>();
  }
  return body.substr(0, 500);
}

// The backend's finish reason of an OpenAI one.
std::string BackendFinishReason(const std::string& reason) {
  if (reason == "abort") return "cancelled";
  return reason;  // stop, length, error
}

json RequestBody(const ModelSummary& summary, const GenerationInput& input,
                 const GenerationParams& p, bool* chat) {
  json body = {{"model", summary.model_dir},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"max_tokens", p.max_new_tokens},
               {"temperature", p.sampling.temperature},
               {"top_p", p.sampling.top_p},
               {"ignore_eos", p.ignore_eos},
               {"return_token_ids", true}};
  if (p.sampling.top_k > 0) body["top_k"] = p.sampling.top_k;
  if (p.sampling.seed) body["seed"] = *p.sampling.seed;
  if (p.sampling.min_p > 0) body["min_p"] = p.sampling.min_p;
  if (p.sampling.presence_penalty != 0) body["presence_penalty"] = p.sampling.presence_penalty;
  if (p.sampling.frequency_penalty != 0) body["frequency_penalty"] = p.sampling.frequency_penalty;
  if (!p.stop_strings.empty()) body["stop"] = p.stop_strings;
  if (!p.stop_token_ids.empty()) body["stop_token_ids"] = p.stop_token_ids;
  *chat = false;
  if (const auto* t = std::get_if<TokenInput>(&input)) {
    body["prompt"] = t->ids;
  } else if (const auto* x = std::get_if<TextInput>(&input)) {
    body["prompt"] = x->text;
  } else {
    *chat = true;
    json messages = json::array();
    for (const ChatMessage& m : std::get<ChatInput>(input).messages) {
      messages.push_back({{"role", m.role}, {"content", m.content}});
    }
    body["messages"] = std::move(messages);
  }
  return body;
}

// Server-sent events of one streamed response, turned into chunks as they arrive.
class EventStream {
 public:
  EventStream(const ChunkCallback* on_chunk, bool chat) : on_chunk_(on_chunk), chat_(chat) {}

  void Feed(const char* data, size_t size) {
    buffer_.append(data, size);
    size_t start = 0;
    while (true) {
      const size_t end = buffer_.find('\n', start);
      if (end == std::string::npos) break;
      absl::string_view line(buffer_.data() + start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      start = end + 1;
      if (line.empty()) {
        if (!data_.empty()) Dispatch(std::exchange(data_, std::string()));
      } else if (absl::ConsumePrefix(&line, "data:")) {
        if (!data_.empty()) data_ += '\n';
        data_ += std::string(absl::StripLeadingAsciiWhitespace(line));
      }  // other fields (event:, id:, comments) carry nothing here
    }
    buffer_.erase(0, start);
  }

  // The final chunk: after [DONE], after an error event, or with `failure` when the stream
  // broke off before either.
  void Finish(absl::Status failure) {
    if (finished_) return;
    if (!data_.empty()) Dispatch(std::exchange(data_, std::string()));  // an unterminated event
    if (finished_) return;
    GenerationChunk last;
    last.final = true;
    last.usage = usage_;
    if (!failure.ok()) {
      last.finish_reason = "error";
      last.status = std::move(failure);
    } else if (finish_reason_.empty()) {
      last.finish_reason = "error";
      last.status = absl::UnavailableError("the stream ended without a finish_reason");
    } else {
      last.finish_reason = BackendFinishReason(finish_reason_);
    }
    finished_ = true;
    (*on_chunk_)(std::move(last));
  }

  bool finished() const { return finished_; }

 private:
  void Dispatch(const std::string& data) {
    if (finished_) return;
    if (data == "[DONE]") return Finish(absl::OkStatus());
    const json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return;  // not JSON: ignored, as clients do
    if (j.contains("error")) {
      return Finish(absl::UnknownError(absl::StrCat("error event: ", ErrorMessage(data))));
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      usage_.prompt_tokens = j["usage"].value("prompt_tokens", 0);
      usage_.completion_tokens = j["usage"].value("completion_tokens", 0);
    }
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return;
    const json& choice = j["choices"][0];
    GenerationChunk chunk;
    if (chat_) {
      if (choice.contains("delta") && choice["delta"].is_object()) {
        chunk.text = choice["delta"].value("content", std::string());
      }
    } else {
      chunk.text = choice.value("text", std::string());
    }
    if (choice.contains("token_ids") && choice["token_ids"].is_array()) {
      for (const json& id : choice["token_ids"]) {
        if (id.is_number_integer()) chunk.token_ids.push_back(id.get<int32_t>());
      }
    } else if (!chunk.text.empty()) {
      chunk.token_ids.push_back(-1);  // a server without token ids: one token per text chunk
    }
    if (choice.contains("finish_reason") && choice["finish_reason"].is_string()) {
      finish_reason_ = choice["finish_reason"].get<std::string>();
    }
    if (!chunk.token_ids.empty() || !chunk.text.empty()) (*on_chunk_)(std::move(chunk));
  }

  const ChunkCallback* on_chunk_;
  const bool chat_;
  std::string buffer_, data_;
  std::string finish_reason_;
  Usage usage_;
  bool finished_ = false;
};

void RunRequest(std::shared_ptr<OpenAiHttpBackend::Shared> shared, uint64_t id,
                std::shared_ptr<std::atomic<bool>> cancelled, GenerationInput input,
                GenerationParams params, ChunkCallback on_chunk) {
  bool chat = false;
  const json body = RequestBody(shared->summary, input, params, &chat);
  EventStream events(&on_chunk, chat);
  int status = 0;
  std::string error_body;
  {
    std::unique_ptr<httplib::Client> client = shared->NewClient();
    httplib::Request req;
    req.method = "POST";
    req.path = chat ? "/v1/chat/completions" : "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.set_header("Accept", "text/event-stream");
    req.response_handler = [&](const httplib::Response& res) {
      status = res.status;
      return !cancelled->load();
    };
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      if (status == 200) {
        events.Feed(data, size);
      } else if (error_body.size() < 65536) {
        error_body.append(data, size);
      }
      return !cancelled->load();
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    const bool sent = client->send(req, res, error);
    if (cancelled->load()) {
      GenerationChunk last;
      last.final = true;
      last.finish_reason = "cancelled";
      last.status = absl::CancelledError("cancelled by the client");
      if (!events.finished()) on_chunk(std::move(last));
    } else if (status != 0 && status != 200) {
      events.Finish(StatusFromHttp(status, ErrorMessage(error_body)));
    } else if (!sent) {
      events.Finish(absl::UnavailableError(absl::StrCat("HTTP request to ", shared->base_url,
                                                        " failed: ", httplib::to_string(error))));
    } else {
      events.Finish(absl::OkStatus());
    }
  }
  std::lock_guard<std::mutex> lock(shared->mu);
  shared->running.erase(id);
  shared->cv.notify_all();
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiHttpBackend>> OpenAiHttpBackend::Connect(
    const std::string& base_url, OpenAiHttpClientOptions options) {
  std::string url = base_url;
  while (absl::EndsWith(url, "/")) url.pop_back();
  if (absl::EndsWith(url, "/v1")) url.resize(url.size() - 3);
  if (!absl::StartsWith(url, "http://") && !absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--base-url: expected http://HOST:PORT or https://HOST:PORT, got \"", base_url, "\""));
  }
  auto shared = std::make_shared<Shared>();
  shared->base_url = url;
  shared->options = std::move(options);
  std::unique_ptr<httplib::Client> client = shared->NewClient();
  if (!client->is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat("--base-url: cannot use \"", base_url, "\""));
  }
  httplib::Result res = client->Get("/v1/models");
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", url, ": ", httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return StatusFromHttp(res->status,
                          absl::StrCat("GET ", url, "/v1/models: ", ErrorMessage(res->body)));
  }
  const json models = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (!models.is_object() || !models.contains("data") || !models["data"].is_array() ||
      models["data"].empty()) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, "/v1/models: no model listed: ", res->body.substr(0, 300)));
  }
  const json* card = nullptr;
  for (const json& m : models["data"]) {
    if (!m.is_object() || !m.contains("id") || !m["id"].is_string()) continue;
    if (shared->options.model.empty() || m["id"] == shared->options.model) {
      card = &m;
      break;
    }
  }
  if (card == nullptr) {
    return absl::NotFoundError(absl::StrCat("the server at ", url, " does not list the model \"",
                                            shared->options.model, "\""));
  }
  ModelSummary& s = shared->summary;
  s.model_dir = (*card)["id"].get<std::string>();
  s.max_model_len = card->value("max_model_len", 0);
  if (card->contains("bitserve") && (*card)["bitserve"].is_object()) {
    const json& b = (*card)["bitserve"];
    s.vocab_size = b.value("vocab_size", 0);
    s.max_num_seqs = b.value("max_num_seqs", 0);
    s.kv_dtype = b.value("kv_dtype", std::string());
    s.kv_capacity_tokens = b.value("kv_capacity_tokens", int64_t{0});
    s.device = b.value("device", std::string());
    if (b.contains("eos_token_ids") && b["eos_token_ids"].is_array()) {
      for (const json& id : b["eos_token_ids"]) {
        if (id.is_number_integer()) s.eos_token_ids.push_back(id.get<int>());
      }
    }
  }
  if (s.device.empty()) s.device = "server at " + url;
  return std::unique_ptr<OpenAiHttpBackend>(new OpenAiHttpBackend(std::move(shared)));
}

OpenAiHttpBackend::~OpenAiHttpBackend() {
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->closing = true;
  for (auto& [id, cancelled] : shared_->running) cancelled->store(true);
  shared_->cv.wait(lock, [&] { return shared_->running.empty(); });
}

absl::StatusOr<uint64_t> OpenAiHttpBackend::Submit(GenerationInput input, GenerationParams params,
                                                   ChunkCallback on_chunk) {
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->closing) return absl::UnavailableError("the HTTP client is closing");
    id = shared_->next_id++;
    shared_->running.emplace(id, cancelled);
  }
  std::thread(RunRequest, shared_, id, std::move(cancelled), std::move(input), std::move(params),
              std::move(on_chunk))
      .detach();
  return id;
}

void OpenAiHttpBackend::Cancel(uint64_t id, const absl::Status&) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  if (auto it = shared_->running.find(id); it != shared_->running.end()) it->second->store(true);
}

absl::StatusOr<std::vector<int32_t>> OpenAiHttpBackend::Tokenize(const std::string&, bool) {
  return absl::UnimplementedError("the OpenAI HTTP API has no tokenize call");
}

absl::StatusOr<ModelSummary> OpenAiHttpBackend::Info() { return shared_->summary; }

}  // namespace bitserve::rpc
