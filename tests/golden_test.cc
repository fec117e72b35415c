// The CPU engine against transformers' BitNetForCausalLM (float32), on checkpoints that
// `bitserve make-model` wrote. Reference data: tests/data/golden/NAME/, made by
// tests/reference/make_golden.py (see its docstring).
//
// Tolerance: relative L2 error of each sequence's logits <= 1e-4 and identical greedy tokens, up to
// the first int8 rounding tie. BitNet's per-token int8 quantization is discontinuous: where an
// activation times its scale lands within float32 noise of k + 1/2, two correct float32
// implementations (here: summation orders that differ by an ulp) may round it apart, and from that
// token on a small random model legitimately diverges. The reference activations before every
// quantization let the test prove that each divergence starts at such a tie (both values within
// kTieWindow of the same half-integer) and that everything before it agrees; rows from the tie on
// are not compared, and at least kMinCoverage of all rows must be.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "runtime/file_io.h"
#include "nlohmann/json.hpp"
#include "runtime/cpu_engine.h"
#include "runtime/generation.h"
#include "runtime/npy.h"
#include "runtime/synthetic_checkpoint.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

constexpr double kMaxRelativeError = 1e-4;
constexpr double kMaxActivationError = 1e-5;  // before the first tie, relative to the row's max
constexpr double kTieWindow = 1e-4;           // in int8 units; observed float noise is < 1e-5
constexpr double kMinCoverage = 0.5;
const fs::path kGoldenRoot = "tests/data/golden";

std::string ReadAll(const fs::path& p) { return ReadFileToString(p).value_or(""); }

// torch's ActQuant scale for a row: (1 / max(|x|, 1e-5)) * 127.
float QuantScale(const float* x, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return (1.0f / std::max(m, 1e-5f)) * 127.0f;
}

float QuantRound(float v) { return std::clamp(std::nearbyint(v), -128.0f, 127.0f); }

struct Sequence {
  std::vector<int32_t> prompt, generated;
  NpyArray logits;       // [rows, vocab]
  NpyArray activations;  // [rows, sum of widths]
  int64_t rows() const { return logits.shape[0]; }
  std::vector<int32_t> all() const {
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), generated.begin(), generated.end());
    return ids;
  }
};

// Where our activations first round differently from the reference's.
struct TieReport {
  int64_t first_row;  // rows before it are compared; == rows when there is no divergence
  std::string where;  // description of the divergence
  bool is_tie = true;  // both values within kTieWindow of the same half-integer
  double max_activation_error = 0;  // before first_row
};

std::vector<Sequence> LoadSequences(const fs::path& dir) {
  auto ref = nlohmann::json::parse(ReadAll(dir / "reference.json"));
  std::vector<Sequence> out;
  for (size_t k = 0; k < ref["sequences"].size(); ++k) {
    const auto& s = ref["sequences"][k];
    Sequence seq;
    seq.prompt = s["prompt_ids"].get<std::vector<int32_t>>();
    seq.generated = s["generated_ids"].get<std::vector<int32_t>>();
    for (auto [array, file] : {std::pair{&seq.logits, "logits_"}, {&seq.activations, "activations_"}}) {
      auto loaded = ReadNpyFloat32(dir / (file + std::to_string(k) + ".npy"));
      EXPECT_TRUE(loaded.ok()) << loaded.status();
      if (loaded.ok()) *array = *std::move(loaded);
    }
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
  return rows == 0 ? 0.0 : std::sqrt(num / den);
}

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kGoldenRoot / GetParam(); }

  std::unique_ptr<CpuEngine> Engine(ActivationTrace trace = nullptr) {
    EngineOptions options;
    options.max_sequences = 4;
    options.trace = std::move(trace);
    auto engine = CpuEngine::Load(dir() / "model", options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  // Prefills the whole sequence with a trace and compares every activation with the reference's.
  TieReport FindFirstTie(const Sequence& seq) {
    struct Segment {
      std::string name;
      int layer;
      int64_t width;
      std::vector<float> x;  // [rows, width]
    };
    std::vector<Segment> segments;
    auto engine = Engine([&](const std::string& name, int layer, const float* x, int64_t rows, int64_t dim) {
      segments.push_back({name, layer, dim, std::vector<float>(x, x + rows * dim)});
    });
    std::vector<int32_t> ids = seq.all();
    std::vector<float> logits;
    SequenceChunk chunk{0, ids, false};
    EXPECT_TRUE(engine->Forward({&chunk, 1}, &logits).ok());

    const int64_t rows = seq.rows(), total = seq.activations.shape[1];
    int64_t sum = 0;
    for (const Segment& s : segments) sum += s.width;
    EXPECT_EQ(sum, total) << "trace layout differs from the reference activations";
    TieReport report{rows, "none", true, 0};
    if (sum != total) return report;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t offset = 0;
      for (const Segment& s : segments) {
        const float* ours = s.x.data() + r * s.width;
        const float* ref = seq.activations.data.data() + r * total + offset;
        offset += s.width;
        const float s_ours = QuantScale(ours, s.width), s_ref = QuantScale(ref, s.width);
        float ref_max = 0, diff = 0;
        for (int64_t i = 0; i < s.width; ++i) {
          ref_max = std::max(ref_max, std::fabs(ref[i]));
          diff = std::max(diff, std::fabs(ours[i] - ref[i]));
        }
        for (int64_t i = 0; i < s.width; ++i) {
          const float v_ours = ours[i] * s_ours, v_ref = ref[i] * s_ref;
          if (QuantRound(v_ours) == QuantRound(v_ref)) continue;
          const double half = std::floor(std::min(v_ours, v_ref)) + 0.5;
          report.first_row = r;
          report.is_tie = std::fabs(v_ours - half) <= kTieWindow && std::fabs(v_ref - half) <= kTieWindow;
          std::ostringstream where;
          where.precision(9);
          where << "row " << r << " layer " << s.layer << " " << s.name << "[" << i << "]: ours "
                << v_ours << ", reference " << v_ref;
          report.where = where.str();
          return report;
        }
        report.max_activation_error = std::max(report.max_activation_error, double{diff} / ref_max);
      }
    }
    return report;
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

TEST_P(Golden, ActivationsAgreeUpToRoundingTies) {
  int64_t compared = 0, total = 0;
  for (const Sequence& seq : LoadSequences(dir())) {
    TieReport tie = FindFirstTie(seq);
    std::cout << GetParam() << " " << seq.rows() << " rows: first int8 divergence: " << tie.where
              << "; max activation error before it " << tie.max_activation_error << std::endl;
    EXPECT_TRUE(tie.is_tie) << "not a rounding tie: " << tie.where;
    EXPECT_LE(tie.max_activation_error, kMaxActivationError);
    compared += tie.first_row;
    total += seq.rows();
  }
  EXPECT_GE(compared, kMinCoverage * total) << "too few rows before the first rounding tie";
}

TEST_P(Golden, PrefillLogitsMatchTransformers) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  for (const Sequence& seq : LoadSequences(dir())) {
    const int64_t rows = FindFirstTie(seq).first_row;
    std::vector<int32_t> ids = seq.all();
    std::vector<float> logits;
    SequenceChunk chunk{0, ids, true};
    ASSERT_TRUE(engine->Forward({&chunk, 1}, &logits).ok());
    engine->Release(0);
    const double err = RelativeError(logits, seq.logits, 0, rows);
    std::cout << GetParam() << " prefill: " << rows << " of " << ids.size()
              << " rows compared, relative L2 error " << err << std::endl;
    EXPECT_LE(err, kMaxRelativeError);
  }
}

TEST_P(Golden, GreedyDecodeMatchesTransformers) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  for (const Sequence& seq : LoadSequences(dir())) {
    const int64_t rows = FindFirstTie(seq).first_row;
    GenerateRequest request;
    request.prompt = seq.prompt;
    request.max_new_tokens = static_cast<int>(seq.generated.size());
    request.ignore_eos = true;
    std::vector<float> step_logits;
    auto result = Generate(*engine, nullptr, request, 1, nullptr, &step_logits);
    ASSERT_TRUE(result.ok()) << result.status();
    // Step i chooses from the logits of row prompt + i - 1: compare the steps before the tie.
    const int64_t first = static_cast<int64_t>(seq.prompt.size()) - 1;
    const int64_t steps = std::clamp<int64_t>(rows - first, 0, seq.generated.size());
    ASSERT_GE(result->tokens.size(), static_cast<size_t>(steps));
    EXPECT_EQ(std::vector<int32_t>(result->tokens.begin(), result->tokens.begin() + steps),
              std::vector<int32_t>(seq.generated.begin(), seq.generated.begin() + steps));
    const double err = RelativeError(step_logits, seq.logits, first, steps);
    std::cout << GetParam() << " decode: " << steps << " of " << seq.generated.size()
              << " steps compared, relative L2 error " << err << std::endl;
    EXPECT_LE(err, kMaxRelativeError);
  }
}

// Batching and chunking change nothing: every row's math is independent of its neighbours.
TEST_P(Golden, BatchedAndChunkedPrefillGiveIdenticalLogits) {
  auto engine = Engine();
  ASSERT_NE(engine, nullptr);
  std::vector<Sequence> seqs = LoadSequences(dir());
  ASSERT_GE(seqs.size(), 2u);
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
