// The OpenAI HTTP API on a real coordinator (the `tiny` checkpoint, CPU engine) through a real HTTP
// client (cpp-httplib): greedy completions equal the coordinator's own, streamed chunks add up to
// the same text, errors are OpenAI's JSON with their statuses, and a client that disconnects has
// its request cancelled (the coordinator's requests drain to zero) without affecting another.
// The official `openai` npm client is tested against `bitserve serve` in
// tests/openai_client_test.sh.
#include "rpc/openai_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rpc/coordinator.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"

namespace bitserve::rpc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path& TinyModel() {
  static const fs::path dir = [] {
    fs::path d =
        fs::temp_directory_path() / ("bitserve_openai_http_test_" + std::to_string(getpid()));
    auto preset = FindModelPreset("tiny");
    EXPECT_TRUE(preset.ok());
    EXPECT_TRUE(WriteSyntheticCheckpoint(*preset, d, {}).ok());
    return d;
  }();
  return dir;
}

class OpenAiHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.model_dir = TinyModel();
    options.engine.block_size = 4;
    options.scheduler.max_num_seqs = 8;
    options.scheduler.max_num_batched_tokens = 64;
    auto c = Coordinator::Create(options);
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(c).value();
    OpenAiHttpOptions http;
    http.listen = "127.0.0.1:0";
    http.model_name = "tiny";
    http.threads = 8;
    auto s = OpenAiHttpServer::Start(coordinator_.get(), http);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(s).value();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(60, 0);
  }
  void TearDown() override {
    server_.reset();
    coordinator_.reset();
  }

  json Post(const std::string& path, const json& body, int want_status = 200) {
    auto res = client_->Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, want_status) << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
    return json::parse(res->body);
  }

  // What the coordinator itself generates for this request (greedy).
  std::string Direct(GenerationInput input, int max_tokens) {
    GenerationParams p;
    p.max_new_tokens = max_tokens;
    std::mutex mu;
    std::condition_variable cv;
    std::string text;
    bool done = false;
    auto id = coordinator_->Submit(std::move(input), p, [&](GenerationChunk c) {
      std::lock_guard<std::mutex> lock(mu);
      text += c.text;
      done = done || c.final;
      cv.notify_all();
    });
    EXPECT_TRUE(id.ok());
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; });
    return text;
  }

  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<OpenAiHttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(OpenAiHttpTest, ModelsAndHealth) {
  auto res = client_->Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  const json models = json::parse(res->body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  res = client_->Get("/v1/models/tiny");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client_->Get("/v1/models/other");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "model_not_found");
  res = client_->Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client_->Get("/v1/nothing");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_TRUE(json::parse(res->body).contains("error"));
}

TEST_F(OpenAiHttpTest, GreedyCompletionsAreTheCoordinators) {
  const json chat =
      Post("/v1/chat/completions", {{"model", "tiny"},
                                    {"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                                    {"max_tokens", 12},
                                    {"temperature", 0}});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], Direct(ChatInput{{{"user", "Hello"}}}, 12));
  EXPECT_GT(chat["usage"]["prompt_tokens"].get<int>(), 0);
  const json text = Post("/v1/completions", {{"model", "tiny"},
                                             {"prompt", "The capital of France is"},
                                             {"max_tokens", 9},
                                             {"temperature", 0}});
  EXPECT_EQ(text["choices"][0]["text"], Direct(TextInput{"The capital of France is"}, 9));
  EXPECT_EQ(text["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(text["usage"]["completion_tokens"], 9);
  // Two prompts x n = 2: four choices, the seeded ones reproducible.
  const json many =
      Post("/v1/completions",
           {{"prompt", {"a", "b"}}, {"n", 2}, {"max_tokens", 4}, {"seed", 5}, {"logprobs", 2}});
  ASSERT_EQ(many["choices"].size(), 4u);
  EXPECT_EQ(many["choices"][3]["index"], 3);
  EXPECT_EQ(many["choices"][0]["logprobs"]["tokens"].size(), 4u);
  const json again =
      Post("/v1/completions",
           {{"prompt", {"a", "b"}}, {"n", 2}, {"max_tokens", 4}, {"seed", 5}, {"logprobs", 2}});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(many["choices"][i]["text"], again["choices"][i]["text"]);
}

TEST_F(OpenAiHttpTest, StreamedChunksAddUpToTheText) {
  const json body = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                     {"max_tokens", 10},
                     {"temperature", 0},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  std::string raw;
  auto res =
      client_->Post("/v1/chat/completions", httplib::Headers{}, body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::string text, finish;
  bool done = false, usage = false, role = false;
  for (absl::string_view event : absl::StrSplit(res->body, "\n\n", absl::SkipEmpty())) {
    ASSERT_TRUE(absl::StartsWith(event, "data: ")) << event;
    event.remove_prefix(6);
    if (event == "[DONE]") {
      done = true;
      continue;
    }
    ASSERT_FALSE(done) << "data after [DONE]";
    const json chunk = json::parse(event);
    ASSERT_EQ(chunk["object"], "chat.completion.chunk");
    if (chunk["choices"].empty()) {
      usage = true;
      EXPECT_EQ(chunk["usage"]["completion_tokens"], 10);
      continue;
    }
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("role")) role = true;
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(role && usage && done);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(text, Direct(ChatInput{{{"user", "Hello"}}}, 10));
}

TEST_F(OpenAiHttpTest, ErrorsAreOpenAiJson) {
  json e = Post("/v1/chat/completions", {{"messages", "hi"}}, 400);
  EXPECT_EQ(e["error"]["param"], "messages");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  e = Post("/v1/completions", {{"prompt", "x"}, {"model", "gpt-4"}}, 404);
  EXPECT_EQ(e["error"]["code"], "model_not_found");
  // A prompt longer than the model takes: the coordinator's refusal, as a 400 (nothing queued).
  std::vector<int> ids(100000, 5);
  e = Post("/v1/completions", {{"prompt", ids}}, 400);
  EXPECT_EQ(e["error"]["code"], "context_length_exceeded");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("max_model_len"), std::string::npos)
      << e.dump();
  // The server still answers.
  Post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}});
}

// Sends a request on a raw connection, reads until `until` appears (or `wait` passes), then
// closes the connection: a client that goes away mid-request.
void RequestThenHangUp(int port, const std::string& body, const std::string& until,
                       std::chrono::milliseconds wait) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string request = absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n",
      "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline &&
         (until.empty() || got.find(until) == std::string::npos)) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10) > 0) {
      char buffer[4096];
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<size_t>(n));
    }
  }
  if (!until.empty()) EXPECT_NE(got.find(until), std::string::npos) << got;
  close(fd);
}

// A client that goes away mid-request, streamed or not: its request is cancelled within a
// moment (left alone it would run ~4,000 tokens, several seconds), and the server goes on.
TEST_F(OpenAiHttpTest, DisconnectCancels) {
  for (bool stream : {true, false}) {
    const json body = {{"prompt", "Once upon a time"},
                       {"max_tokens", 100000},
                       {"ignore_eos", true},
                       {"stream", stream}};
    RequestThenHangUp(server_->port(), body.dump(), stream ? "data: " : "",
                      std::chrono::milliseconds(stream ? 20000 : 300));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (coordinator_->State().running + coordinator_->State().waiting > 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(coordinator_->State().running + coordinator_->State().waiting, 0)
        << (stream ? "streamed" : "not streamed")
        << " request still running 2 s after its client left";
  }
  Post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}});
}

// With API keys: every route but /health answers 401 (OpenAI's error JSON) without a key or with
// a wrong one, and works with one.
TEST_F(OpenAiHttpTest, ApiKeys) {
  server_.reset();
  const ApiKeys keys = ApiKeys::FromKeys({"sk-test-key-0123456789"});
  OpenAiHttpOptions http;
  http.listen = "127.0.0.1:0";
  http.model_name = "tiny";
  http.api_keys = &keys;
  auto s = OpenAiHttpServer::Start(coordinator_.get(), http);
  ASSERT_TRUE(s.ok()) << s.status();
  server_ = std::move(s).value();
  httplib::Client client("127.0.0.1", server_->port());
  const std::string body = json{{"prompt", "x"}, {"max_tokens", 2}}.dump();
  for (const char* header : {"", "Bearer wrong-key-0123456789", "sk-test-key-0123456789"}) {
    httplib::Headers headers;
    if (*header) headers.emplace("Authorization", header);
    auto res = client.Post("/v1/completions", headers, body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << header;
    EXPECT_EQ(json::parse(res->body)["error"]["code"], "invalid_api_key");
    res = client.Get("/v1/models", headers);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << header;
  }
  httplib::Headers good{{"Authorization", "Bearer sk-test-key-0123456789"}};
  auto res = client.Post("/v1/completions", good, body, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  res = client.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << "health stays open for probes";
}

}  // namespace
}  // namespace bitserve::rpc
