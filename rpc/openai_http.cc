#include "rpc/openai_http.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "rpc/connection_socket.h"
#include "rpc/http_listen.h"

namespace bitserve::rpc {
namespace {

using nlohmann::json;
using openai::ApiError;
using openai::ChoiceResult;
using openai::ParsedRequest;

constexpr auto kPoll = std::chrono::milliseconds(100);

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(Dump(e.ToJson()), "application/json");
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomId(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(rng()));
  return absl::StrCat(prefix, hex);
}

// One HTTP request's backend requests (one per choice), shared by the HTTP thread and the
// backend's callbacks (which may outlive the HTTP side: they hold it by shared_ptr).
struct Call {
  struct Event {
    int choice;
    GenerationChunk chunk;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> events;
  int open = 0;  // choices whose final chunk has not come
};

class Handler {
 public:
  Handler(GenerationBackend* backend, const OpenAiHttpOptions& options)
      : backend_(backend), options_(options) {}

  void Models(const httplib::Request&, httplib::Response& res) const {
    res.set_content(Dump({{"object", "list"}, {"data", json::array({ModelJson()})}}),
                    "application/json");
  }

  // The model card, with vLLM's max_model_len and bitserve's own facts ("bitserve": what
  // `bench-serve --base-url` needs to make random prompts) beside OpenAI's fields.
  json ModelJson() const {
    json card = {{"id", options_.model_name},
                 {"object", "model"},
                 {"created", created_},
                 {"owned_by", "bitserve"}};
    if (absl::StatusOr<ModelSummary> info = backend_->Info(); info.ok()) {
      card["max_model_len"] = info->max_model_len;
      card["bitserve"] = {{"vocab_size", info->vocab_size},
                          {"eos_token_ids", info->eos_token_ids},
                          {"max_num_seqs", info->max_num_seqs},
                          {"kv_dtype", info->kv_dtype},
                          {"kv_capacity_tokens", info->kv_capacity_tokens},
                          {"device", info->device}};
    }
    return card;
  }

  void Model(const httplib::Request& req, httplib::Response& res) const {
    if (req.matches[1] != options_.model_name) {
      ApiError e;
      e.status = 404;
      e.message = absl::StrCat("The model '", req.matches[1].str(), "' does not exist");
      e.param = "model";
      e.code = "model_not_found";
      return SendError(res, e);
    }
    res.set_content(Dump(ModelJson()), "application/json");
  }

  void Health(const httplib::Request&, httplib::Response& res) const {
    const bool ready = options_.ready ? options_.ready() : true;
    res.status = ready ? 200 : 503;
    res.set_content(ready ? "{}" : Dump({{"status", "starting or draining"}}), "application/json");
  }

  void Generate(openai::Endpoint endpoint, const httplib::Request& req,
                httplib::Response& res) const;

 private:
  std::string TokenBytes(int32_t id) const {
    if (options_.token_bytes) return options_.token_bytes(id);
    return absl::StrCat("token_id:", id);
  }

  GenerationBackend* backend_;
  const OpenAiHttpOptions& options_;
  const int64_t created_ = UnixSeconds();
};

// Submits every choice; on a refusal cancels those already accepted and returns it.
absl::Status SubmitAll(GenerationBackend* backend, const ParsedRequest& r, const std::string& id,
                       const std::shared_ptr<Call>& call, std::vector<uint64_t>* ids) {
  const int choices = static_cast<int>(r.prompts.size()) * r.n;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->open = choices;
  }
  for (int c = 0; c < choices; ++c) {
    GenerationParams params = r.params;
    params.request_id = choices > 1 ? absl::StrCat(id, "-", c) : id;
    if (params.sampling.seed && r.n > 1) *params.sampling.seed += static_cast<uint64_t>(c % r.n);
    absl::StatusOr<uint64_t> submitted =
        backend->Submit(r.prompts[c / r.n], std::move(params), [call, c](GenerationChunk chunk) {
          std::lock_guard<std::mutex> lock(call->mu);
          if (chunk.final) --call->open;
          call->events.push_back({c, std::move(chunk)});
          call->cv.notify_all();
        });
    if (!submitted.ok()) {
      for (uint64_t done : *ids) backend->Cancel(done, absl::CancelledError("request refused"));
      return submitted.status();
    }
    ids->push_back(*submitted);
  }
  return absl::OkStatus();
}

void CancelAll(GenerationBackend* backend, const std::vector<uint64_t>& ids) {
  for (uint64_t id : ids) backend->Cancel(id, absl::CancelledError("the HTTP client disconnected"));
}

void Handler::Generate(openai::Endpoint endpoint, const httplib::Request& req,
                       httplib::Response& res) const {
  absl::StatusOr<ModelSummary> info = backend_->Info();
  if (!info.ok()) return SendError(res, openai::ErrorFromStatus(info.status()));
  auto parsed = openai::ParseRequest(endpoint, req.body, options_.model_name, info->max_model_len);
  if (const ApiError* e = std::get_if<ApiError>(&parsed)) return SendError(res, *e);
  auto request = std::make_shared<ParsedRequest>(std::move(std::get<ParsedRequest>(parsed)));
  const std::string id =
      RandomId(endpoint == openai::Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-");
  const int64_t created = UnixSeconds();
  auto call = std::make_shared<Call>();
  auto ids = std::make_shared<std::vector<uint64_t>>();
  if (absl::Status s = SubmitAll(backend_, *request, id, call, ids.get()); !s.ok()) {
    return SendError(res, openai::ErrorFromStatus(s));
  }
  // The connection's socket, to notice a client that goes away while it waits.
  const int fd =
      FindConnectionSocket(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  const int choices = static_cast<int>(ids->size());
  const std::string model = options_.model_name;
  GenerationBackend* backend = backend_;
  const auto token_bytes = [this](int32_t t) { return TokenBytes(t); };

  if (!request->stream) {
    std::vector<ChoiceResult> results(choices);
    absl::Status failed;
    std::unique_lock<std::mutex> lock(call->mu);
    while (true) {
      call->cv.wait_for(lock, kPoll, [&] { return !call->events.empty(); });
      for (; !call->events.empty(); call->events.pop_front()) {
        Call::Event& ev = call->events.front();
        ChoiceResult& c = results[ev.choice];
        c.text += ev.chunk.text;
        for (SampleResult& lp : ev.chunk.logprobs) c.logprobs.push_back(std::move(lp));
        c.token_ids.insert(c.token_ids.end(), ev.chunk.token_ids.begin(), ev.chunk.token_ids.end());
        if (ev.chunk.final) {
          c.finish_reason = ev.chunk.finish_reason;
          c.usage = ev.chunk.usage;
          if (!ev.chunk.status.ok() && failed.ok()) failed = ev.chunk.status;
        }
      }
      if (call->open == 0) break;
      if (PeerClosed(fd)) {
        lock.unlock();
        CancelAll(backend, *ids);
        res.status = 499;  // nobody reads it
        return;
      }
    }
    lock.unlock();
    if (!failed.ok()) return SendError(res, openai::ErrorFromStatus(failed));
    res.set_content(
        Dump(openai::CompletionResponse(*request, id, created, model, results, token_bytes)),
        "application/json");
    return;
  }

  // Streamed: server-sent events, one `data: {chunk}` per choice's new text, the usage chunk when
  // asked, then `data: [DONE]`. httplib calls the provider (on this thread) until it says done.
  res.set_header("Cache-Control", "no-cache");
  auto started = std::make_shared<bool>(false);
  auto usage = std::make_shared<Usage>();
  res.set_chunked_content_provider(
      "text/event-stream",
      [=](size_t, httplib::DataSink& sink) {
        std::string out;
        const auto event = [&out](const json& j) {
          absl::StrAppend(&out, "data: ", Dump(j), "\n\n");
        };
        if (!*started) {
          *started = true;
          if (request->endpoint == openai::Endpoint::kChatCompletions) {
            for (int c = 0; c < choices; ++c) {
              event(openai::StreamChunk(*request, id, created, model, c, "", {}, "", true,
                                        token_bytes));
            }
          }
        }
        bool finished = false;
        {
          std::unique_lock<std::mutex> lock(call->mu);
          call->cv.wait_for(lock, kPoll, [&] { return !call->events.empty(); });
          for (; !call->events.empty(); call->events.pop_front()) {
            Call::Event& ev = call->events.front();
            const GenerationChunk& ch = ev.chunk;
            if (ch.final && !ch.status.ok()) {
              event(openai::ErrorFromStatus(ch.status).ToJson());
              continue;
            }
            if (ch.final) {
              usage->completion_tokens += ch.usage.completion_tokens;
              if (ev.choice % request->n == 0) usage->prompt_tokens += ch.usage.prompt_tokens;
            }
            const bool ids = request->return_token_ids && !ch.token_ids.empty();
            if (ch.text.empty() && ch.logprobs.empty() && !ids && !ch.final) continue;
            event(openai::StreamChunk(*request, id, created, model, ev.choice, ch.text, ch.logprobs,
                                      ch.final ? ch.finish_reason : "", false, token_bytes,
                                      ch.token_ids));
          }
          finished = call->open == 0;
        }
        if (finished) {
          if (request->include_usage) {
            event(openai::UsageChunk(*request, id, created, model, *usage));
          }
          out += "data: [DONE]\n\n";
        }
        if ((!out.empty() && !sink.write(out.data(), out.size())) || PeerClosed(fd)) {
          CancelAll(backend, *ids);
          return false;
        }
        if (finished) sink.done();
        return true;
      },
      [backend, ids, call](bool success) {
        // A response cut short (the client went, a write failed): end what still runs.
        if (!success) CancelAll(backend, *ids);
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Start(
    GenerationBackend* backend, OpenAiHttpOptions options) {
  absl::StatusOr<HttpListenAddress> address =
      ParseHttpListen(options.listen, "--http-listen address");
  if (!address.ok()) return address.status();
  std::unique_ptr<OpenAiHttpServer> server(new OpenAiHttpServer());
  if (options.tls_cert.empty()) {
    server->server_ = std::make_unique<httplib::Server>();
  } else {
    // The certificate follows its files (rpc/tls_reload.h); it outlives the server's SSL_CTX.
    absl::StatusOr<std::shared_ptr<ReloadingServerCertificate>> certificate =
        ReloadingServerCertificate::Load(
            {.cert = options.tls_cert, .key = options.tls_key, .client_ca = options.tls_client_ca});
    if (!certificate.ok()) return certificate.status();
    server->certificate_ = *certificate;
    auto tls = std::make_unique<httplib::SSLServer>(
        [certificate = *certificate](SSL_CTX& ctx) { return certificate->Install(&ctx); });
    if (!tls->is_valid()) {
      return absl::InternalError("the HTTP API's TLS context could not be made (OpenSSL)");
    }
    server->server_ = std::move(tls);
  }
  httplib::Server& http = *server->server_;
  // The handler and the options it reads live as long as the server's routes.
  auto handler = std::make_shared<Handler>(backend, server->options_ = std::move(options));
  const int threads = std::max(server->options_.threads, 2);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_keep_alive_max_count(10000);
  http.set_keep_alive_timeout(30);
  http.set_payload_max_length(size_t{64} << 20);
  http.Get("/health",
           [handler](const httplib::Request& q, httplib::Response& r) { handler->Health(q, r); });
  http.Get("/v1/models",
           [handler](const httplib::Request& q, httplib::Response& r) { handler->Models(q, r); });
  http.Get(R"(/v1/models/(.+))",
           [handler](const httplib::Request& q, httplib::Response& r) { handler->Model(q, r); });
  http.Post("/v1/completions", [handler](const httplib::Request& q, httplib::Response& r) {
    handler->Generate(openai::Endpoint::kCompletions, q, r);
  });
  http.Post("/v1/chat/completions", [handler](const httplib::Request& q, httplib::Response& r) {
    handler->Generate(openai::Endpoint::kChatCompletions, q, r);
  });
  // API keys: checked before any route but /health (probes stay open).
  if (const ApiKeys* keys = server->options_.api_keys; keys != nullptr && keys->enabled()) {
    http.set_pre_routing_handler([keys](const httplib::Request& q, httplib::Response& r) {
      if (q.path == "/health" || keys->Allows(q.get_header_value("Authorization"))) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      ApiError e;
      e.status = 401;
      e.message = std::string(kApiKeyRequired);
      e.code = "invalid_api_key";
      SendError(r, e);
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  // Routes that do not exist, a body too large, ...: OpenAI's error JSON.
  http.set_error_handler([](const httplib::Request& q, httplib::Response& r) {
    if (!r.body.empty()) return;  // the handlers' own error JSON
    ApiError e;
    e.status = r.status;
    e.message = r.status == 404 ? absl::StrCat("no route ", q.method, " ", q.path)
                                : absl::StrCat("HTTP ", r.status, " for ", q.method, " ", q.path);
    if (r.status == 404) e.type = "not_found_error";
    r.set_content(Dump(e.ToJson()), "application/json");
  });
  absl::StatusOr<int> port = StartHttpServer(http, *address, "OpenAI HTTP API", &server->thread_);
  if (!port.ok()) return port.status();
  server->port_ = *port;
  server->host_ = address->host;
  return server;
}

OpenAiHttpServer::~OpenAiHttpServer() { Stop(); }

void OpenAiHttpServer::Stop() {
  if (server_ && thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace bitserve::rpc
