// The CPU engine against transformers' BitNetForCausalLM (float32), on checkpoints that
// `bitserve make-model` wrote. Reference data: tests/data/golden/NAME/, made by
// tests/reference/make_golden.py (see its docstring). Tolerance: relative L2 error of the logits
// of each sequence <= 1e-4, greedy tokens identical.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/cpu_engine.h"
#include "runtime/generation.h"
#include "runtime/npy.h"
#include "runtime/synthetic_checkpoint.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

constexpr double kMaxRelativeError = 1e-4;
const fs::path kGoldenRoot = "tests/data/golden";

struct Sequence {
  std::vector<int32_t> prompt, generated;
  NpyArray logits;  // [prompt + generated, vocab]
  std::vector<int32_t> all() const {
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), generated.begin(), generated.end());
    return ids;
  }
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<Sequence> LoadSequences(const fs::path& dir) {
  auto ref = nlohmann::json::parse(ReadAll(dir / "reference.json"));
  std::vector<Sequence> out;
  for (size_t k = 0; k < ref["sequences"].size(); ++k) {
    const auto& s = ref["sequences"][k];
    Sequence seq;
    seq.prompt = s["prompt_ids"].get<std::vector<int32_t>>();
    seq.generated = s["generated_ids"].get<std::vector<int32_t>>();
    auto logits = ReadNpyFloat32(dir / ("logits_" + std::to_string(k) + ".npy"));
    EXPECT_TRUE(logits.ok()) << logits.status();
    seq.logits = *std::move(logits);
    out.push_back(std::move(seq));
  }
  return out;
}

// ||a - b|| / ||b|| over `rows` rows of b starting at `first_row`.
double RelativeError(const std::vector<float>& a, const NpyArray& b, int64_t first_row, int64_t rows) {
  const int64_t vocab = b.shape[1];
  double num = 0, den = 0;
  for (int64_t i = 0; i < rows * vocab; ++i) {
    const double r = b.data[first_row * vocab + i];
    num += (a[i] - r) * (a[i] - r);
    den += r * r;
  }
  return std::sqrt(num / den);
}

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kGoldenRoot / GetParam(); }
  std::unique_ptr<CpuEngine> Engine() {
    EngineOptions options;
    options.max_sequences = 4;
    auto engine = CpuEngine::Load(dir() / "model", options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }
};

TEST_P(Golden, MakeModelStillWritesTheCommittedCheckpoint) {
  auto preset = FindModelPreset(GetParam());
  ASSERT_TRUE(preset.ok());
  fs::path tmp = fs::temp_directory_path() / ("bitserve_golden_" + std::to_string(getpid()) + GetParam());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, tmp, {}).ok());
  for (const char* file : {"model.safetensors", "config.json"}) {
    EXPECT_EQ(ReadAll(tmp / file), ReadAll(dir() / "model" / file))
        << file << ": make-model output changed; regenerate tests/data/golden (make_golden.py)";
  }
  fs::remove_all(tmp);
}

TEST_P(Golden, PrefillLogitsMatchTransformers) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  for (const Sequence& seq : LoadSequences(dir())) {
    std::vector<int32_t> ids = seq.all();
    std::vector<float> logits;
    SequenceChunk chunk{0, ids, true};
    ASSERT_TRUE(engine->Forward({&chunk, 1}, &logits).ok());
    engine->Release(0);
    const double err = RelativeError(logits, seq.logits, 0, ids.size());
    std::cout << GetParam() << " prefill of " << ids.size() << " tokens: relative L2 error " << err
              << std::endl;
    EXPECT_LE(err, kMaxRelativeError);
  }
}

TEST_P(Golden, GreedyDecodeMatchesTransformers) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  for (const Sequence& seq : LoadSequences(dir())) {
    GenerateRequest request;
    request.prompt = seq.prompt;
    request.max_new_tokens = static_cast<int>(seq.generated.size());
    request.ignore_eos = true;
    std::vector<float> step_logits;
    auto result = GenerateGreedy(*engine, request, 1, nullptr, &step_logits);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->tokens, seq.generated);
    // Step i chose token i from the logits of position prompt + i - 1.
    const double err = RelativeError(step_logits, seq.logits, seq.prompt.size() - 1, seq.generated.size());
    std::cout << GetParam() << " decode of " << seq.generated.size()
              << " tokens: relative L2 error " << err << std::endl;
    EXPECT_LE(err, kMaxRelativeError);
  }
}

// Batching and chunking change nothing: every row's math is independent of its neighbours.
TEST_P(Golden, BatchedAndChunkedPrefillGiveIdenticalLogits) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  std::vector<Sequence> seqs = LoadSequences(dir());
  ASSERT_EQ(seqs.size(), 2u);
  std::vector<int32_t> a = seqs[0].all(), b = seqs[1].all();
  std::vector<float> alone_a, alone_b, batched;
  SequenceChunk ca{0, a, true}, cb{1, b, true};
  ASSERT_TRUE(engine->Forward({&ca, 1}, &alone_a).ok());
  ASSERT_TRUE(engine->Forward({&cb, 1}, &alone_b).ok());
  engine->Release(0);
  engine->Release(1);
  SequenceChunk both[] = {{2, a, true}, {3, b, true}};
  ASSERT_TRUE(engine->Forward(both, &batched).ok());
  std::vector<float> concat = alone_a;
  concat.insert(concat.end(), alone_b.begin(), alone_b.end());
  EXPECT_EQ(batched, concat);

  // The same sequence prefilled in chunks of 7 tokens.
  std::vector<float> chunked, part;
  for (size_t start = 0; start < a.size(); start += 7) {
    std::span<const int32_t> piece(a.data() + start, std::min<size_t>(7, a.size() - start));
    SequenceChunk c{0, piece, true};
    ASSERT_TRUE(engine->Forward({&c, 1}, &part).ok());
    chunked.insert(chunked.end(), part.begin(), part.end());
  }
  EXPECT_EQ(chunked, alone_a);
}

TEST_P(Golden, BadTokensAndOverlongSequencesChangeNothing) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  std::vector<int32_t> ok = {1, 2, 3};
  std::vector<float> logits;
  SequenceChunk good{0, ok, false};
  ASSERT_TRUE(engine->Forward({&good, 1}, &logits).ok());
  std::vector<int32_t> bad = {4, engine->config().vocab_size};
  SequenceChunk chunks[] = {{1, ok, false}, {0, bad, false}};
  absl::Status s = engine->Forward(chunks, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("outside the vocabulary"), std::string::npos) << s;
  EXPECT_EQ(engine->length(0), 3);  // neither sequence advanced
  EXPECT_EQ(engine->length(1), 0);
  std::vector<int32_t> huge(engine->max_seq_len(), 1);
  SequenceChunk too_long{0, huge, false};
  EXPECT_EQ(engine->Forward({&too_long, 1}, &logits).code(), absl::StatusCode::kOutOfRange);
  SequenceChunk twice[] = {{1, ok, false}, {1, ok, false}};
  EXPECT_EQ(engine->Forward(twice, &logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->length(0), 3);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, Golden, ::testing::Values("test-gqa", "test-odd"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace bitserve
