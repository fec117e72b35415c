// The gRPC service, server and client against a scripted fake backend on a loopback port:
// streaming order, validation messages, status code mapping, cancellation and deadlines reaching
// the backend, health and reflection; RemoteBackend against the same server.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "rpc/api_conversion.h"
#include "rpc/client.h"
#include "rpc/grpc_server.h"

namespace bitserve::rpc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

GenerationChunk TokenChunk(int32_t token, std::string text) {
  GenerationChunk c;
  c.token_ids = {token};
  c.text = std::move(text);
  return c;
}

GenerationChunk FinalChunk(std::string reason, absl::Status status = absl::OkStatus()) {
  GenerationChunk c;
  c.final = true;
  c.finish_reason = std::move(reason);
  c.status = std::move(status);
  c.usage = {3, 5};
  c.seed = 42;
  return c;
}

// Plays `script` for every request, each on its own thread, `gap` apart. `endless`: one token
// every 5 ms until cancelled. A cancelled request ends with a final "cancelled" chunk.
class FakeBackend : public GenerationBackend {
 public:
  ~FakeBackend() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (uint64_t id = 1; id < next_id_; ++id) cancelled_.insert(id);
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  absl::StatusOr<uint64_t> Submit(GenerationInput input, GenerationParams params,
                                  ChunkCallback on_chunk) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++submits_;
    if (!submit_error.ok()) return submit_error;
    const uint64_t id = next_id_++;
    last_input_ = input;
    last_params_ = params;
    threads_.emplace_back([this, id, on_chunk = std::move(on_chunk)] { Play(id, on_chunk); });
    return id;
  }

  void Cancel(uint64_t id, const absl::Status& why) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_.insert(id);
      cancel_calls_.push_back(id);
    }
    cv_.notify_all();
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text,
                                                bool add_special) override {
    if (text == "fail") return absl::FailedPreconditionError("no tokenizer");
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(128000);
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }

  absl::StatusOr<ModelSummary> Info() override {
    ModelSummary m;
    m.model_dir = "/models/tiny";
    m.architecture = "BitNetForCausalLM";
    m.vocab_size = 128256;
    m.num_layers = 2;
    m.max_model_len = 4096;
    m.kv_block_size = 16;
    m.kv_num_blocks = 100;
    m.kv_capacity_tokens = 1600;
    m.kv_dtype = "f32";
    m.device = "cpu";
    m.eos_token_ids = {128001, 128009};
    return m;
  }

  // Waits until Cancel(id) was called.
  bool WaitCancelCall(uint64_t id, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      return std::find(cancel_calls_.begin(), cancel_calls_.end(), id) != cancel_calls_.end();
    });
  }
  int submits() {
    std::lock_guard<std::mutex> lock(mu_);
    return submits_;
  }
  GenerationInput last_input() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_input_;
  }
  GenerationParams last_params() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_params_;
  }

  absl::Status submit_error;
  std::vector<GenerationChunk> script;
  std::chrono::milliseconds gap{1};
  bool endless = false;

 private:
  void Play(uint64_t id, const ChunkCallback& on_chunk) {
    auto cancelled_after = [&](std::chrono::milliseconds wait) {
      std::unique_lock<std::mutex> lock(mu_);
      return cv_.wait_for(lock, wait, [&] { return cancelled_.count(id) > 0; });
    };
    if (endless) {
      for (int i = 0; i < 4000; ++i) {
        if (cancelled_after(5ms)) break;
        on_chunk(TokenChunk(i, "x"));
      }
      on_chunk(FinalChunk("cancelled"));
      return;
    }
    for (const GenerationChunk& chunk : script) {
      if (cancelled_after(gap)) {
        on_chunk(FinalChunk("cancelled"));
        return;
      }
      on_chunk(chunk);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_id_ = 1;
  int submits_ = 0;
  std::set<uint64_t> cancelled_;
  std::vector<uint64_t> cancel_calls_;
  std::vector<std::thread> threads_;
  GenerationInput last_input_;
  GenerationParams last_params_;
};

class GenerationServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GrpcServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.service.metrics = &metrics_;
    absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(&backend_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Generation::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }

  struct StreamResult {
    std::vector<v1::GenerateResponse> responses;
    grpc::Status status;
  };
  StreamResult Generate(const v1::GenerateRequest& request,
                        std::chrono::milliseconds timeout = 10s) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    auto reader = stub_->Generate(&context, request);
    StreamResult result;
    v1::GenerateResponse response;
    while (reader->Read(&response)) result.responses.push_back(response);
    result.status = reader->Finish();
    return result;
  }

  // A unary call with hand-encoded bytes (the health and reflection messages are tiny; encoding
  // them avoids generating stubs of protos that the gRPC library already registers).
  grpc::Status RawUnary(const std::string& method, const std::string& request,
                        std::string* response, std::shared_ptr<grpc::Channel> channel = nullptr) {
    grpc::GenericStub stub(channel ? channel : channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    grpc::Slice slice(request);
    grpc::ByteBuffer request_buffer(&slice, 1);
    grpc::ByteBuffer response_buffer;
    grpc::Status status;
    auto call = stub.PrepareUnaryCall(&context, method, request_buffer, &cq);
    call->StartCall();
    call->Finish(&response_buffer, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    *response = Flatten(response_buffer);
    return status;
  }

  static std::string Flatten(const grpc::ByteBuffer& buffer) {
    std::vector<grpc::Slice> slices;
    std::string out;
    if (!buffer.Dump(&slices).ok()) return out;
    for (const grpc::Slice& s : slices)
      out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    return out;
  }

  // grpc.health.v1.Health/Check: request {string service = 1}, response {enum status = 1},
  // SERVING = 1, NOT_SERVING = 2. Returns the status value, or -code on an RPC error.
  int HealthStatus(const std::string& service, std::shared_ptr<grpc::Channel> channel = nullptr) {
    std::string request;
    if (!service.empty()) {
      request = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
    }
    std::string response;
    grpc::Status status = RawUnary("/grpc.health.v1.Health/Check", request, &response, channel);
    if (!status.ok()) return -static_cast<int>(status.error_code());
    if (response.size() == 2 && response[0] == 0x08) return response[1];
    return 0;  // UNKNOWN (field absent)
  }

  // How many Generate requests the metrics count as rejected with INVALID_ARGUMENT.
  int RejectedInvalid() {
    const std::string text = metrics_.RenderPrometheus();
    const std::string key =
        "bitserve_requests_total{outcome=\"rejected\",code=\"INVALID_ARGUMENT\"} ";
    const size_t at = text.find(key);
    return at == std::string::npos ? 0 : std::stoi(text.substr(at + key.size()));
  }

  ServingMetrics metrics_;  // outlives the server
  FakeBackend backend_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

v1::GenerateRequest TextRequest(const std::string& text) {
  v1::GenerateRequest request;
  request.set_text(text);
  return request;
}

TEST_F(GenerationServiceTest, StreamsChunksInOrderAndEndsWithFinishReasonAndUsage) {
  for (int i = 0; i < 5; ++i)
    backend_.script.push_back(TokenChunk(10 + i, std::string(1, 'a' + i)));
  backend_.script.push_back(FinalChunk("length"));
  v1::GenerateRequest request = TextRequest("hello");
  request.set_request_id("req-7");
  request.mutable_sampling()->set_temperature(0.7f);
  request.mutable_sampling()->set_seed(0);  // explicit 0 is a seed, not "absent"
  request.add_stop("\n\n");
  request.set_max_tokens(5);

  StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), 6u);
  std::string text;
  for (int i = 0; i < 5; ++i) {
    const v1::GenerateResponse& r = result.responses[i];
    EXPECT_THAT(r.token_ids(), ElementsAre(10 + i));
    EXPECT_EQ(r.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_FALSE(r.has_usage());
    EXPECT_FALSE(r.has_seed());
    EXPECT_EQ(r.request_id(), "req-7");
    text += r.text();
  }
  EXPECT_EQ(text, "abcde");
  const v1::GenerateResponse& last = result.responses.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 3);
  EXPECT_EQ(last.usage().completion_tokens(), 5);
  EXPECT_EQ(last.seed(), 42u);

  // What the backend was asked for: defaults where absent, values where given.
  GenerationParams p = backend_.last_params();
  EXPECT_EQ(std::get<TextInput>(backend_.last_input()).text, "hello");
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.7f);
  EXPECT_FLOAT_EQ(p.sampling.top_p, 1.0f);
  EXPECT_FLOAT_EQ(p.sampling.repetition_penalty, 1.0f);
  ASSERT_TRUE(p.sampling.seed.has_value());
  EXPECT_EQ(*p.sampling.seed, 0u);
  EXPECT_EQ(p.max_new_tokens, 5);
  EXPECT_THAT(p.stop_strings, ElementsAre("\n\n"));
  EXPECT_EQ(p.request_id, "req-7");
}

TEST_F(GenerationServiceTest, DefaultsWhenFieldsAreAbsent) {
  backend_.script = {FinalChunk("eos")};
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(1);
  request.mutable_token_ids()->add_ids(2);
  ASSERT_TRUE(Generate(request).status.ok());
  GenerationParams p = backend_.last_params();
  EXPECT_THAT(std::get<TokenInput>(backend_.last_input()).ids, ElementsAre(1, 2));
  EXPECT_EQ(p.sampling.temperature, 0.0f);
  EXPECT_EQ(p.sampling.top_k, 0);
  EXPECT_EQ(p.sampling.top_p, 1.0f);
  EXPECT_EQ(p.sampling.repetition_penalty, 1.0f);
  EXPECT_FALSE(p.sampling.seed.has_value());
  EXPECT_EQ(p.max_new_tokens, kDefaultMaxTokens);
  EXPECT_FALSE(p.logprobs);
  EXPECT_FALSE(p.ignore_eos);
}

TEST_F(GenerationServiceTest, ChatMessagesAndLogprobsPassThrough) {
  GenerationChunk chunk = TokenChunk(7, "hi");
  chunk.logprobs.push_back(SampleResult{7, -0.5f, {{7, -0.5f}, {9, -1.5f}}});
  backend_.script = {chunk, FinalChunk("stop")};
  v1::GenerateRequest request;
  auto* m = request.mutable_messages()->add_messages();
  m->set_role("system");
  m->set_content("be brief");
  m = request.mutable_messages()->add_messages();
  m->set_role("user");
  m->set_content("hello");
  request.set_logprobs(true);
  request.set_top_logprobs(2);
  StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), 2u);
  ASSERT_EQ(result.responses[0].logprobs_size(), 1);
  const v1::TokenLogprob& lp = result.responses[0].logprobs(0);
  EXPECT_EQ(lp.token_id(), 7);
  EXPECT_FLOAT_EQ(lp.logprob(), -0.5f);
  ASSERT_EQ(lp.top_logprobs_size(), 2);
  EXPECT_EQ(lp.top_logprobs(1).token_id(), 9);
  EXPECT_EQ(result.responses[1].finish_reason(), v1::FINISH_REASON_STOP);
  const ChatInput chat = std::get<ChatInput>(backend_.last_input());
  ASSERT_EQ(chat.messages.size(), 2u);
  EXPECT_EQ(chat.messages[1].role, "user");
  EXPECT_EQ(chat.messages[1].content, "hello");
  EXPECT_TRUE(backend_.last_params().logprobs);
  EXPECT_EQ(backend_.last_params().sampling.top_logprobs, 2);
}

TEST_F(GenerationServiceTest, InvalidArgumentNamesTheFieldAndQueuesNothing) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.clear_text(); }, "input must be set: one of text, messages, token_ids"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(1.5f); },
       "sampling.top_p must be in (0, 1], got 1.5"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(0); },
       "sampling.top_p must be in (0, 1], got 0"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(-1); },
       "sampling.temperature must be in [0, 100], got -1"},
      {[](auto& r) { r.mutable_sampling()->set_top_k(-2); },
       "sampling.top_k must be >= 0 (0 = off), got -2"},
      {[](auto& r) { r.mutable_sampling()->set_min_p(2); },
       "sampling.min_p must be in [0, 1], got 2"},
      {[](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); },
       "sampling.repetition_penalty must be in (0, 100], got 0"},
      {[](auto& r) { r.mutable_sampling()->set_presence_penalty(3); },
       "sampling.presence_penalty must be in [-2, 2], got 3"},
      {[](auto& r) { r.mutable_sampling()->set_frequency_penalty(-2.5f); },
       "sampling.frequency_penalty must be in [-2, 2], got -2.5"},
      {[](auto& r) { r.set_max_tokens(0); }, "max_tokens must be >= 1, got 0"},
      {[](auto& r) { r.set_max_tokens(-5); }, "max_tokens must be >= 1, got -5"},
      {[](auto& r) {
         r.set_logprobs(true);
         r.set_top_logprobs(21);
       },
       "top_logprobs must be in [0, 20], got 21"},
      {[](auto& r) { r.set_top_logprobs(2); }, "top_logprobs needs logprobs = true"},
      {[](auto& r) {
         r.add_stop("ok");
         r.add_stop("");
       },
       "stop[1] must not be empty"},
      {[](auto& r) { r.add_stop_token_ids(-3); }, "stop_token_ids[0] must be >= 0, got -3"},
      {[](auto& r) { r.mutable_token_ids(); }, "token_ids.ids must hold at least one token id"},
      {[](auto& r) {
         r.mutable_token_ids()->add_ids(5);
         r.mutable_token_ids()->add_ids(-1);
       },
       "token_ids.ids[1] must be >= 0, got -1"},
      {[](auto& r) { r.mutable_messages(); }, "messages must hold at least one message"},
      {[](auto& r) {
         auto* m = r.mutable_messages()->add_messages();
         m->set_role("bot");
       },
       "messages[0].role must be one of system, user, assistant, got \"bot\""},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = TextRequest("hello");
    c.edit(request);
    StreamResult result = Generate(request);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_EQ(result.status.error_message(), c.message);
    EXPECT_TRUE(result.responses.empty());
  }
  EXPECT_EQ(backend_.submits(), 0);
}

// Defect: malformed protobuf bytes and invalid UTF-8 in a string field answered INTERNAL with an
// empty message (gRPC's deserializer), logged by libprotobuf on every request.
TEST_F(GenerationServiceTest, MalformedBytesAndInvalidUtf8AreInvalidArgumentNamingTheField) {
  struct Case {
    std::string method;
    std::string bytes;
    std::string message;  // a part of the status message
  };
  // GenerateRequest: text = 1; messages = 2 {messages = 1 {role = 1, content = 2}}; stop = 6.
  const std::string user = std::string("\x0a\x04user", 6);
  const std::string good_message = std::string("\x0a\x0a", 2) + user + std::string("\x12\x02hi", 4);
  const std::string bad_message =
      std::string("\x0a\x0a", 2) + user + std::string("\x12\x02\xc3\x28", 4);
  const std::string messages = good_message + bad_message;
  const std::vector<Case> cases = {
      {"Generate", std::string("\x0a\x05hi", 4),
       "malformed protobuf bytes (text runs past the end)"},
      {"Generate", std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),
       "malformed protobuf bytes"},
      {"Generate", std::string("\x00\x01", 2), "malformed protobuf bytes (a bad field tag)"},
      {"Generate", std::string("\x0a\x02\xff\xfe", 4), "text is not valid UTF-8"},
      {"Generate", std::string("\x12", 1) + static_cast<char>(messages.size()) + messages,
       "messages.messages[1].content is not valid UTF-8"},
      {"Generate", std::string("\x0a\x01x\x32\x01z\x32\x01\x80", 9), "stop[1] is not valid UTF-8"},
      {"Tokenize", std::string("\x0a\x01\xc0", 3), "text is not valid UTF-8"},
      {"Tokenize", std::string("\x0a\x09", 2), "malformed protobuf bytes"},
      {"ModelInfo", std::string("\x08", 1), "malformed protobuf bytes"},
  };
  for (const Case& c : cases) {
    std::string response;
    const grpc::Status status = RawUnary("/bitserve.v1.Generation/" + c.method, c.bytes, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.message << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  EXPECT_EQ(backend_.submits(), 0);
  EXPECT_EQ(RejectedInvalid(), 6) << "every refused Generate is counted as rejected";
  // Unknown fields are skipped as protobuf skips them, whatever their bytes.
  std::string response;
  EXPECT_TRUE(RawUnary("/bitserve.v1.Generation/Tokenize",
                       std::string("\x0a\x02hi\xa2\x06\x02\xff\xfe\xa8\x06\x07", 12), &response)
                  .ok());
}

TEST_F(GenerationServiceTest, RequestsRefusedForTheirParametersAreCountedAsRejected) {
  v1::GenerateRequest request = TextRequest("hello");
  request.mutable_sampling()->set_temperature(-1);
  EXPECT_EQ(Generate(request).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request = TextRequest("hello");
  request.set_max_tokens(0);
  EXPECT_EQ(Generate(request).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Generate(v1::GenerateRequest()).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(RejectedInvalid(), 3);
}

TEST_F(GenerationServiceTest, SubmitErrorsMapOneToOneToGrpcCodes) {
  const std::vector<absl::Status> errors = {
      absl::ResourceExhaustedError("queue full: 64 requests waiting, max_waiting 64"),
      absl::ResourceExhaustedError("prompt of 5000 tokens exceeds max_model_len 4096"),
      absl::UnavailableError("draining"),
      absl::InvalidArgumentError("token_ids.ids[0] = 999999 is outside the vocabulary [0, 128256)"),
  };
  for (const absl::Status& error : errors) {
    backend_.submit_error = error;
    StreamResult result = Generate(TextRequest("hello"));
    EXPECT_EQ(static_cast<int>(result.status.error_code()), static_cast<int>(error.code()));
    EXPECT_EQ(result.status.error_message(), error.message());
  }
}

TEST_F(GenerationServiceTest, FinalErrorChunkEndsTheStreamWithItsStatus) {
  GenerationChunk error = FinalChunk("error", absl::UnavailableError("worker 1 lost"));
  error.token_ids = {12};
  backend_.script = {TokenChunk(11, "a"), error};
  StreamResult result = Generate(TextRequest("hello"));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(result.status.error_message(), "worker 1 lost");
  ASSERT_EQ(result.responses.size(), 2u);  // the tokens that came with the error arrive
  EXPECT_THAT(result.responses[1].token_ids(), ElementsAre(12));
  EXPECT_EQ(result.responses[1].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
}

TEST_F(GenerationServiceTest, ServerSideCancelSendsFinalMessageThenCancelled) {
  backend_.script = {TokenChunk(11, "a"), FinalChunk("cancelled")};
  StreamResult result = Generate(TextRequest("hello"));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_EQ(result.responses.size(), 2u);
  EXPECT_EQ(result.responses[1].finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(result.responses[1].usage().completion_tokens(), 5);
}

TEST_F(GenerationServiceTest, ClientCancelCancelsTheBackendRequest) {
  backend_.endless = true;
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("hello"));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(reader->Read(&response));
  const auto start = std::chrono::steady_clock::now();
  context.TryCancel();
  EXPECT_TRUE(backend_.WaitCancelCall(1, 2s));
  // Polling every 20 ms: the backend hears of it well within that plus scheduling noise.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(GenerationServiceTest, DeadlineCancelsTheBackendRequest) {
  backend_.endless = true;
  const auto start = std::chrono::steady_clock::now();
  StreamResult result = Generate(TextRequest("hello"), 200ms);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_FALSE(result.responses.empty());  // tokens streamed until then
  EXPECT_TRUE(backend_.WaitCancelCall(1, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
}

TEST_F(GenerationServiceTest, TokenizeAndModelInfo) {
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("hi");
    request.set_add_special_tokens(true);
    v1::TokenizeResponse response;
    ASSERT_TRUE(stub_->Tokenize(&context, request, &response).ok());
    EXPECT_THAT(response.token_ids(), ElementsAre(128000, 'h', 'i'));
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("fail");
    v1::TokenizeResponse response;
    grpc::Status status = stub_->Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(status.error_message(), "no tokenizer");
  }
  {
    grpc::ClientContext context;
    v1::ModelInfoResponse response;
    ASSERT_TRUE(stub_->ModelInfo(&context, v1::ModelInfoRequest(), &response).ok());
    EXPECT_EQ(response.architecture(), "BitNetForCausalLM");
    EXPECT_EQ(response.vocab_size(), 128256);
    EXPECT_EQ(response.kv_capacity_tokens(), 1600);
    EXPECT_THAT(response.eos_token_ids(), ElementsAre(128001, 128009));
  }
}

TEST_F(GenerationServiceTest, HealthReportsLivenessAndReadiness) {
  constexpr int kServing = 1, kNotServing = 2;
  EXPECT_EQ(HealthStatus(""), kServing);
  EXPECT_EQ(HealthStatus(kGenerationServiceName), kNotServing);  // not ready at start
  server_->SetReady(true);
  EXPECT_EQ(HealthStatus(kGenerationServiceName), kServing);
  server_->SetReady(false);  // draining or workers lost
  EXPECT_EQ(HealthStatus(kGenerationServiceName), kNotServing);
  EXPECT_EQ(HealthStatus(""), kServing);
  EXPECT_EQ(HealthStatus("no.such.Service"), -static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

TEST_F(GenerationServiceTest, HealthPortServesOnlyHealthInPlaintextBesideTheApi) {
  // The API with TLS would do too; what matters is that the health port is a second server that
  // follows the API's statuses and carries nothing else.
  GrpcServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.health_listen_address = "127.0.0.1:0";
  options.service.metrics = &metrics_;
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(&backend_, options);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_FALSE((*server)->health_address().empty());
  EXPECT_NE((*server)->health_address(), (*server)->address());
  auto health_channel =
      grpc::CreateChannel((*server)->health_address(), grpc::InsecureChannelCredentials());
  constexpr int kServing = 1, kNotServing = 2;
  EXPECT_EQ(HealthStatus("", health_channel), kServing);
  EXPECT_EQ(HealthStatus(kGenerationServiceName, health_channel), kNotServing);
  (*server)->SetReady(true);
  EXPECT_EQ(HealthStatus(kGenerationServiceName, health_channel), kServing);
  // No generation on the health port.
  auto stub = v1::Generation::NewStub(health_channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 5s);
  auto reader = stub->Generate(&context, TextRequest("hello"));
  v1::GenerateResponse response;
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // Shutdown: NOT_SERVING there too, then the port closes.
  (*server)->Shutdown(std::chrono::system_clock::now() + 1s);
  const int after = HealthStatus(kGenerationServiceName, health_channel);
  EXPECT_TRUE(after == kNotServing || after < 0) << after;
}

TEST_F(GenerationServiceTest, HealthPortThatCannotBeBoundIsAnError) {
  GrpcServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.health_listen_address = server_->address();  // taken
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(&backend_, options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(server.status().message(), HasSubstr("the health port"));
}

TEST_F(GenerationServiceTest, ReflectionListsTheServiceAndServesItsFile) {
  auto reflect = [&](const std::string& request) {
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    void* tag;
    bool ok;
    auto call = stub.PrepareCall(
        &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
    grpc::Slice slice(request);
    grpc::ByteBuffer request_buffer(&slice, 1);
    call->Write(request_buffer, reinterpret_cast<void*>(2));
    EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
    call->WritesDone(reinterpret_cast<void*>(3));
    EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(4));
    EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return Flatten(response);
  };
  // ServerReflectionRequest.list_services (field 7) = "*"; the response lists names as strings.
  const std::string services = reflect(std::string("\x3a\x01*", 3));
  EXPECT_THAT(services, HasSubstr("bitserve.v1.Generation"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
  // file_containing_symbol (field 4): the serialized FileDescriptorProto of our proto.
  const std::string symbol = "bitserve.v1.Generation";
  const std::string file =
      reflect(std::string("\x22", 1) + static_cast<char>(symbol.size()) + symbol);
  EXPECT_THAT(file, HasSubstr("bitserve/v1/bitserve.proto"));
  EXPECT_THAT(file, HasSubstr("GenerateRequest"));
}

TEST_F(GenerationServiceTest, ListenFailureIsUnavailable) {
  GrpcServerOptions options;
  options.listen_address = server_->address();  // taken
  absl::StatusOr<std::unique_ptr<GrpcServer>> second = GrpcServer::Start(&backend_, options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(server_->address()));
}

// ---- RemoteBackend against the same server ----

struct Collected {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<GenerationChunk> chunks;
  bool done = false;

  ChunkCallback Callback() {
    return [this](GenerationChunk chunk) {
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_FALSE(done) << "a chunk after the final one";
      done = chunk.final;
      chunks.push_back(std::move(chunk));
      cv.notify_all();
    };
  }
  bool WaitDone(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [this] { return done; });
  }
  size_t Size() {
    std::lock_guard<std::mutex> lock(mu);
    return chunks.size();
  }
};

class RemoteBackendTest : public GenerationServiceTest {
 protected:
  void SetUp() override {
    GenerationServiceTest::SetUp();
    absl::StatusOr<std::unique_ptr<RemoteBackend>> remote =
        RemoteBackend::Connect(server_->address());
    ASSERT_TRUE(remote.ok()) << remote.status();
    remote_ = std::move(*remote);
  }
  void TearDown() override {
    remote_.reset();
    GenerationServiceTest::TearDown();
  }
  std::unique_ptr<RemoteBackend> remote_;
};

TEST_F(RemoteBackendTest, StreamsChunksInOrder) {
  for (int i = 0; i < 4; ++i) backend_.script.push_back(TokenChunk(20 + i, "t"));
  backend_.script.push_back(FinalChunk("eos"));
  GenerationParams params;
  params.sampling.seed = 7;
  params.stop_strings = {"END"};
  params.max_new_tokens = 4;
  Collected got;
  ASSERT_TRUE(remote_->Submit(TokenInput{{1, 2, 3}}, params, got.Callback()).ok());
  ASSERT_TRUE(got.WaitDone());
  ASSERT_EQ(got.chunks.size(), 5u);
  for (int i = 0; i < 4; ++i) EXPECT_THAT(got.chunks[i].token_ids, ElementsAre(20 + i));
  EXPECT_EQ(got.chunks[4].finish_reason, "eos");
  EXPECT_TRUE(got.chunks[4].status.ok());
  EXPECT_EQ(got.chunks[4].usage.completion_tokens, 5);
  EXPECT_EQ(got.chunks[4].seed, 42u);
  // The request crossed the wire intact.
  GenerationParams p = backend_.last_params();
  EXPECT_EQ(p.sampling.seed, std::optional<uint64_t>(7));
  EXPECT_THAT(p.stop_strings, ElementsAre("END"));
  EXPECT_EQ(p.max_new_tokens, 4);
  EXPECT_THAT(std::get<TokenInput>(backend_.last_input()).ids, ElementsAre(1, 2, 3));
}

TEST_F(RemoteBackendTest, InvalidParametersFailSubmit) {
  GenerationParams params;
  params.sampling.top_p = 1.5f;
  Collected got;
  absl::StatusOr<uint64_t> id = remote_->Submit(TextInput{"hi"}, params, got.Callback());
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(id.status().message(), "sampling.top_p must be in (0, 1], got 1.5");
  EXPECT_EQ(got.Size(), 0u);
}

TEST_F(RemoteBackendTest, ServerErrorsArriveAsFinalErrorChunk) {
  backend_.submit_error = absl::ResourceExhaustedError("queue full");
  Collected got;
  ASSERT_TRUE(remote_->Submit(TextInput{"hi"}, GenerationParams(), got.Callback()).ok());
  ASSERT_TRUE(got.WaitDone());
  ASSERT_EQ(got.chunks.size(), 1u);
  EXPECT_EQ(got.chunks[0].finish_reason, "error");
  EXPECT_EQ(got.chunks[0].status, absl::ResourceExhaustedError("queue full"));
}

TEST_F(RemoteBackendTest, CancelEndsWithCancelledAndReachesTheServerBackend) {
  backend_.endless = true;
  Collected got;
  absl::StatusOr<uint64_t> id =
      remote_->Submit(TextInput{"hi"}, GenerationParams(), got.Callback());
  ASSERT_TRUE(id.ok());
  while (got.Size() < 2) std::this_thread::sleep_for(1ms);
  remote_->Cancel(*id, absl::CancelledError("cancelled"));
  ASSERT_TRUE(got.WaitDone());
  EXPECT_EQ(got.chunks.back().finish_reason, "cancelled");
  EXPECT_TRUE(backend_.WaitCancelCall(1, 2s));
  remote_->Cancel(*id, absl::CancelledError("cancelled"));  // finished: ignored
  EXPECT_EQ(remote_->InFlight(), 0);
}

TEST_F(RemoteBackendTest, RequestTimeoutIsDeadlineExceeded) {
  backend_.endless = true;
  RemoteBackendOptions options;
  options.request_timeout = 150ms;
  RemoteBackend remote(channel_, options);
  Collected got;
  ASSERT_TRUE(remote.Submit(TextInput{"hi"}, GenerationParams(), got.Callback()).ok());
  ASSERT_TRUE(got.WaitDone());
  EXPECT_EQ(got.chunks.back().finish_reason, "error");
  EXPECT_EQ(got.chunks.back().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(backend_.WaitCancelCall(1, 2s));
}

TEST_F(RemoteBackendTest, ManyConcurrentRequestsAllFinish) {
  for (int i = 0; i < 3; ++i) backend_.script.push_back(TokenChunk(i, "t"));
  backend_.script.push_back(FinalChunk("length"));
  std::vector<std::unique_ptr<Collected>> all;
  for (int i = 0; i < 64; ++i) {
    all.push_back(std::make_unique<Collected>());
    ASSERT_TRUE(remote_->Submit(TextInput{"hi"}, GenerationParams(), all.back()->Callback()).ok());
  }
  for (auto& got : all) {
    ASSERT_TRUE(got->WaitDone());
    ASSERT_EQ(got->chunks.size(), 4u);
    EXPECT_EQ(got->chunks.back().finish_reason, "length");
  }
}

TEST_F(RemoteBackendTest, DestructorCancelsWhatIsInFlight) {
  backend_.endless = true;
  Collected got;
  ASSERT_TRUE(remote_->Submit(TextInput{"hi"}, GenerationParams(), got.Callback()).ok());
  remote_.reset();
  EXPECT_TRUE(got.WaitDone(0ms));
  EXPECT_EQ(got.chunks.back().finish_reason, "cancelled");
}

TEST_F(RemoteBackendTest, TokenizeInfoAndUnreachableServer) {
  absl::StatusOr<std::vector<int32_t>> ids = remote_->Tokenize("ab", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre('a', 'b'));
  EXPECT_EQ(remote_->Tokenize("fail", false).status(),
            absl::FailedPreconditionError("no tokenizer"));
  absl::StatusOr<ModelSummary> info = remote_->Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_dir, "/models/tiny");
  EXPECT_EQ(info->kv_num_blocks, 100);

  RemoteBackendOptions options;
  options.connect_timeout = 200ms;
  absl::StatusOr<std::unique_ptr<RemoteBackend>> none =
      RemoteBackend::Connect("127.0.0.1:1", options);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ApiConversionTest, RequestRoundTrips) {
  GenerationParams params;
  params.sampling.temperature = 0.8f;
  params.sampling.top_k = 40;
  params.sampling.top_p = 0.9f;
  params.sampling.min_p = 0.05f;
  params.sampling.repetition_penalty = 1.1f;
  params.sampling.presence_penalty = 0.5f;
  params.sampling.frequency_penalty = -0.5f;
  params.sampling.seed = 123;
  params.sampling.top_logprobs = 3;
  params.logprobs = true;
  params.max_new_tokens = 17;
  params.stop_strings = {"a", "b"};
  params.stop_token_ids = {5};
  params.ignore_eos = true;
  params.include_stop_string = true;
  params.priority = 2;
  params.request_id = "x";
  GenerationInput input = ChatInput{{{"user", "hi"}}};
  GenerationInput input2;
  GenerationParams params2;
  ASSERT_TRUE(ParseGenerateRequest(ToGenerateRequest(input, params), &input2, &params2).ok());
  EXPECT_EQ(std::get<ChatInput>(input2).messages[0].content, "hi");
  EXPECT_EQ(params2.sampling.temperature, 0.8f);
  EXPECT_EQ(params2.sampling.top_k, 40);
  EXPECT_EQ(params2.sampling.top_p, 0.9f);
  EXPECT_EQ(params2.sampling.min_p, 0.05f);
  EXPECT_EQ(params2.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(params2.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(params2.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(params2.sampling.seed, std::optional<uint64_t>(123));
  EXPECT_EQ(params2.sampling.top_logprobs, 3);
  EXPECT_TRUE(params2.logprobs);
  EXPECT_EQ(params2.max_new_tokens, 17);
  EXPECT_EQ(params2.stop_strings, params.stop_strings);
  EXPECT_EQ(params2.stop_token_ids, params.stop_token_ids);
  EXPECT_TRUE(params2.ignore_eos);
  EXPECT_TRUE(params2.include_stop_string);
  EXPECT_EQ(params2.priority, 2);
  EXPECT_EQ(params2.request_id, "x");
}

}  // namespace
}  // namespace bitserve::rpc
