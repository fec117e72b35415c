// The gRPC service and RemoteBackend in front of the real Coordinator on the `tiny` preset: what
// comes over the wire equals a direct runtime Generate of the same prompt, and cancellation and
// deadlines free the sequence (the coordinator reports nothing running afterwards).
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "rpc/coordinator.h"
#include "rpc/grpc_server.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"
#include "runtime/engine/engine.h"
#include "runtime/generation/generation.h"

namespace bitserve::rpc {
namespace {

using namespace std::chrono_literals;

struct Collected {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<GenerationChunk> chunks;
  bool done = false;

  ChunkCallback Callback() {
    return [this](GenerationChunk chunk) {
      std::lock_guard<std::mutex> lock(mu);
      done = chunk.final;
      chunks.push_back(std::move(chunk));
      cv.notify_all();
    };
  }
  bool WaitDone(std::chrono::milliseconds timeout = 60s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [this] { return done; });
  }
  size_t Size() {
    std::lock_guard<std::mutex> lock(mu);
    return chunks.size();
  }
  std::vector<int32_t> Tokens() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<int32_t> ids;
    for (const auto& c : chunks) ids.insert(ids.end(), c.token_ids.begin(), c.token_ids.end());
    return ids;
  }
};

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                           ("bitserve_grpc_coord_" + std::to_string(getpid())));
    absl::StatusOr<ModelPreset> preset = FindModelPreset("tiny");
    ASSERT_TRUE(preset.ok()) << preset.status();
    absl::Status written = WriteSyntheticCheckpoint(*preset, *model_dir_, {});
    ASSERT_TRUE(written.ok()) << written;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*model_dir_);
    delete model_dir_;
  }

  void SetUp() override {
    CoordinatorOptions options;
    options.model_dir = *model_dir_;
    options.log_requests = false;
    // Prompts longer than 32 tokens are prefilled in chunks (PrefillProgressComesOverTheWire).
    options.scheduler.long_prefill_chunk = 32;
    absl::StatusOr<std::unique_ptr<Coordinator>> coordinator = Coordinator::Create(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = std::move(*coordinator);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!coordinator_->Ready()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "coordinator never ready";
      std::this_thread::sleep_for(10ms);
    }
    GrpcServerOptions server_options;
    server_options.listen_address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<GrpcServer>> server =
        GrpcServer::Start(coordinator_.get(), server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_->SetReady(true);
    absl::StatusOr<std::unique_ptr<RemoteBackend>> remote =
        RemoteBackend::Connect(server_->address());
    ASSERT_TRUE(remote.ok()) << remote.status();
    remote_ = std::move(*remote);
  }
  void TearDown() override {
    remote_.reset();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
    server_.reset();
    coordinator_.reset();
  }

  void ExpectNothingRunning() {
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (coordinator_->State().running != 0 || coordinator_->State().waiting != 0) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "running " << coordinator_->State().running;
      std::this_thread::sleep_for(5ms);
    }
  }

  static std::filesystem::path* model_dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<RemoteBackend> remote_;
};
std::filesystem::path* CoordinatorServiceTest::model_dir_ = nullptr;

TEST_F(CoordinatorServiceTest, GreedyOverGrpcEqualsDirectGeneration) {
  const std::vector<int32_t> prompt = {128000, 791, 3938, 315, 9822, 374};
  GenerationParams params;
  params.max_new_tokens = 24;
  params.ignore_eos = true;
  Collected remote;
  ASSERT_TRUE(remote_->Submit(TokenInput{prompt}, params, remote.Callback()).ok());
  ASSERT_TRUE(remote.WaitDone());
  const GenerationChunk& last = remote.chunks.back();
  ASSERT_EQ(last.finish_reason, "length") << last.status;
  EXPECT_EQ(last.usage.prompt_tokens, static_cast<int>(prompt.size()));
  EXPECT_EQ(last.usage.completion_tokens, 24);

  EngineOptions engine_options;
  engine_options.max_sequences = 1;
  absl::StatusOr<std::unique_ptr<Engine>> engine = LoadEngine(*model_dir_, engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerateRequest request;
  request.prompt = prompt;
  request.max_new_tokens = 24;
  request.ignore_eos = true;
  absl::StatusOr<GenerateResult> direct = Generate(**engine, nullptr, request);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(remote.Tokens(), direct->tokens);
}

TEST_F(CoordinatorServiceTest, CancelAndDeadlineFreeTheSequence) {
  GenerationParams params;
  params.max_new_tokens = 3000;
  params.ignore_eos = true;
  Collected got;
  absl::StatusOr<uint64_t> id = remote_->Submit(TokenInput{{128000, 50}}, params, got.Callback());
  ASSERT_TRUE(id.ok()) << id.status();
  while (got.Size() < 3) std::this_thread::sleep_for(1ms);
  remote_->Cancel(*id, absl::CancelledError("cancelled"));
  ASSERT_TRUE(got.WaitDone());
  EXPECT_EQ(got.chunks.back().finish_reason, "cancelled");
  ExpectNothingRunning();

  RemoteBackendOptions options;
  options.request_timeout = 300ms;
  RemoteBackend with_deadline(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()), options);
  Collected late;
  ASSERT_TRUE(with_deadline.Submit(TokenInput{{128000, 50}}, params, late.Callback()).ok());
  ASSERT_TRUE(late.WaitDone());
  EXPECT_EQ(late.chunks.back().status.code(), absl::StatusCode::kDeadlineExceeded);
  ExpectNothingRunning();
}

TEST_F(CoordinatorServiceTest, BackendErrorsKeepTheirCode) {
  Collected got;
  ASSERT_TRUE(
      remote_->Submit(TokenInput{{128000, 10'000'000}}, GenerationParams(), got.Callback()).ok());
  ASSERT_TRUE(got.WaitDone());
  EXPECT_EQ(got.chunks.back().finish_reason, "error");
  EXPECT_EQ(got.chunks.back().status.code(), absl::StatusCode::kInvalidArgument)
      << got.chunks.back().status;
}

TEST_F(CoordinatorServiceTest, PrefillProgressComesOverTheWire) {
  std::vector<int32_t> prompt = {128000};
  for (int i = 0; i < 99; ++i) prompt.push_back(1000 + 7 * i);
  GenerationParams params;
  params.max_new_tokens = 2;
  params.ignore_eos = true;
  params.prefill_progress = true;
  Collected got;
  ASSERT_TRUE(remote_->Submit(TokenInput{prompt}, params, got.Callback()).ok());
  ASSERT_TRUE(got.WaitDone());
  std::vector<int> progress;
  for (const GenerationChunk& chunk : got.chunks) {
    if (chunk.prompt_tokens_processed == 0) continue;
    EXPECT_TRUE(chunk.token_ids.empty());
    EXPECT_FALSE(chunk.final);
    EXPECT_EQ(chunk.usage.prompt_tokens, 100);
    progress.push_back(chunk.prompt_tokens_processed);
  }
  EXPECT_EQ(progress, (std::vector<int>{32, 64, 96}));
  EXPECT_EQ(got.Tokens().size(), 2u);
}

}  // namespace
}  // namespace bitserve::rpc
