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

#include "base/file_io.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/checkpoint/npy.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"
#include "runtime/engine/engine.h"
#include "runtime/generation/generation.h"

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
  int64_t first_row;   // rows before it are compared; == rows when there is no divergence
  std::string where;   // description of the divergence
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
    for (auto [array, file] :
         {std::pair{&seq.logits, "logits_"}, {&seq.activations, "activations_"}}) {
      auto loaded = ReadNpyFloat32(dir / (file + std::to_string(k) + ".npy"));
      EXPECT_TRUE(loaded.ok()) << loaded.status();
      if (loaded.ok()) *array = *std::move(loaded);
    }
    out.push_back(std::move(seq));
  }
  return out;
}

// ||a - b|| / ||b|| over `rows` rows of b starting at `first_row`.
double RelativeError(const std::vector<float>& a, const NpyArray& b, int64_t first_row,
                     int64_t rows) {
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

  // Sequence `seq`'s blocks: every 4th block starting at 4 * 64 - 1 - seq, walking down, so that
  // tables are neither contiguous nor ordered.
  // Returned by reference so that spans of it outlive the statement.
  static const std::vector<int32_t>& Blocks(int seq) {
    static const std::vector<std::vector<int32_t>> tables = [] {
      std::vector<std::vector<int32_t>> t(4);
      for (int s = 0; s < 4; ++s) {
        for (int b = 0; b < 64; ++b) t[s].push_back(4 * 64 - 1 - s - 4 * b);
      }
      return t;
    }();
    return tables[seq];
  }

  std::unique_ptr<Engine> MakeEngine(ActivationTrace trace = nullptr) {
    EngineOptions options;
    options.max_sequences = 4;
    options.block_size = 4;       // small blocks: every sequence spans several
    options.max_model_len = 256;  // Blocks(): 64 blocks of 4 (the RoPE cases' models hold fewer)
    options.trace = std::move(trace);
    auto engine = LoadEngine(dir() / "model", options);
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
    auto engine = MakeEngine(
        [&](const std::string& name, int layer, const float* x, int64_t rows, int64_t dim) {
          segments.push_back({name, layer, dim, std::vector<float>(x, x + rows * dim)});
        });
    std::vector<int32_t> ids = seq.all();
    std::vector<float> logits;
    const BatchEntry entry{0, ids, Blocks(0), LogitsWanted::kLast};
    const absl::Status forward = engine->Forward({&entry, 1}, &logits);
    EXPECT_TRUE(forward.ok()) << forward;

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
          report.is_tie =
              std::fabs(v_ours - half) <= kTieWindow && std::fabs(v_ref - half) <= kTieWindow;
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
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  for (const Sequence& seq : LoadSequences(dir())) {
    const int64_t rows = FindFirstTie(seq).first_row;
    std::vector<int32_t> ids = seq.all();
    std::vector<float> logits;
    const BatchEntry entry{0, ids, Blocks(0), LogitsWanted::kAll};
    ASSERT_TRUE(engine->Forward({&entry, 1}, &logits).ok());
    const double err = RelativeError(logits, seq.logits, 0, rows);
    std::cout << GetParam() << " prefill: " << rows << " of " << ids.size()
              << " rows compared, relative L2 error " << err << std::endl;
    EXPECT_LE(err, kMaxRelativeError);
  }
}

TEST_P(Golden, GreedyDecodeMatchesTransformers) {
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  for (const Sequence& seq : LoadSequences(dir())) {
    const int64_t rows = FindFirstTie(seq).first_row;
    GenerateRequest request;
    request.prompt = seq.prompt;
    request.max_new_tokens = static_cast<int>(seq.generated.size());
    request.ignore_eos = true;
    std::vector<float> step_logits;
    auto result = Generate(*engine, nullptr, request, Blocks(1), nullptr, &step_logits);
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
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  std::vector<Sequence> seqs = LoadSequences(dir());
  ASSERT_GE(seqs.size(), 2u);
  std::vector<int32_t> a = seqs[0].all(), b = seqs[1].all();
  std::vector<float> alone_a, alone_b, batched;
  const BatchEntry ea{0, a, Blocks(0), LogitsWanted::kAll}, eb{0, b, Blocks(1), LogitsWanted::kAll};
  ASSERT_TRUE(engine->Forward({&ea, 1}, &alone_a).ok());
  ASSERT_TRUE(engine->Forward({&eb, 1}, &alone_b).ok());
  // Both in one batch, in other blocks (interleaved, out of order).
  const std::vector<int32_t>& ta = Blocks(2);
  const std::vector<int32_t>& tb = Blocks(3);
  const BatchEntry both[] = {{0, a, ta, LogitsWanted::kAll}, {0, b, tb, LogitsWanted::kAll}};
  ASSERT_TRUE(engine->Forward(both, &batched).ok());
  std::vector<float> concat = alone_a;
  concat.insert(concat.end(), alone_b.begin(), alone_b.end());
  EXPECT_EQ(batched, concat);

  // The same sequence prefilled in chunks of 7 tokens (chunks start mid-block).
  std::vector<float> chunked, part;
  for (size_t start = 0; start < a.size(); start += 7) {
    std::span<const int32_t> piece(a.data() + start, std::min<size_t>(7, a.size() - start));
    const BatchEntry c{static_cast<int32_t>(start), piece, Blocks(0), LogitsWanted::kAll};
    ASSERT_TRUE(engine->Forward({&c, 1}, &part).ok());
    chunked.insert(chunked.end(), part.begin(), part.end());
  }
  EXPECT_EQ(chunked, alone_a);

  // Step samples exactly what the host sampler picks from Forward's logits.
  SamplingParams greedy, hot;
  hot.temperature = 1.0f;
  hot.top_k = 50;
  const SampleSpec specs[] = {{&greedy, 1, 0, a, {}}, {&hot, 7, 3, b, {}}};
  const BatchEntry last[] = {{0, a, Blocks(2), LogitsWanted::kLast},
                             {0, b, Blocks(3), LogitsWanted::kLast}};
  std::vector<SampleResult> results;
  ASSERT_TRUE(engine->Step(last, specs, &results).ok());
  ASSERT_EQ(results.size(), 2u);
  const int64_t vocab = engine->config().vocab_size;
  Sampler host(greedy, {});
  EXPECT_EQ(results[0].token, host.SampleFor(specs[0], std::span<const float>(alone_a).subspan(
                                                           (a.size() - 1) * vocab, vocab))
                                  .token);
  EXPECT_EQ(results[1].token, host.SampleFor(specs[1], std::span<const float>(alone_b).subspan(
                                                           (b.size() - 1) * vocab, vocab))
                                  .token);
}

TEST_P(Golden, BadBatchesChangeNothing) {
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> ok = {1, 2, 3}, next = {4}, all = {1, 2, 3, 4};
  std::vector<float> logits, reference;
  const BatchEntry good{0, ok, Blocks(0), LogitsWanted::kLast};
  ASSERT_TRUE(engine->Forward({&good, 1}, &logits).ok());
  const BatchEntry whole{0, all, Blocks(1), LogitsWanted::kLast};
  ASSERT_TRUE(engine->Forward({&whole, 1}, &reference).ok());

  auto expect_rejected = [&](std::span<const BatchEntry> batch, absl::StatusCode code,
                             const char* what) {
    absl::Status s = engine->Forward(batch, &logits);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(std::string(s.message()).find(what), std::string::npos) << s;
  };
  // Sequence 0's block 0 is overwritten only if a rejected batch still ran.
  const std::vector<int32_t> bad = {4, engine->config().vocab_size};
  const BatchEntry bad_token[] = {{0, ok, Blocks(0), LogitsWanted::kLast},
                                  {0, bad, Blocks(2), LogitsWanted::kLast}};
  expect_rejected(bad_token, absl::StatusCode::kInvalidArgument, "outside the vocabulary");
  std::vector<int32_t> huge(engine->max_model_len() + 1, 1);
  std::vector<int32_t> big_table(huge.size() / 4 + 1, 0);
  const BatchEntry too_long{0, huge, big_table, LogitsWanted::kLast};
  expect_rejected({&too_long, 1}, absl::StatusCode::kOutOfRange, "limit");
  const BatchEntry twice[] = {{0, {ok.data(), 1}, Blocks(0), LogitsWanted::kLast},
                              {0, ok, Blocks(0), LogitsWanted::kLast}};
  expect_rejected(twice, absl::StatusCode::kInvalidArgument, "written by two entries");
  const std::vector<int32_t> short_table = {0};
  const std::vector<int32_t> eight(8, 5);
  const BatchEntry uncovered{0, eight, short_table, LogitsWanted::kLast};
  expect_rejected({&uncovered, 1}, absl::StatusCode::kInvalidArgument, "block table");
  const std::vector<int32_t> wild = {engine->num_kv_blocks()};
  const BatchEntry wild_block{0, ok, wild, LogitsWanted::kLast};
  expect_rejected({&wild_block, 1}, absl::StatusCode::kInvalidArgument, "block id");

  // Sequence 0 continues as if nothing had happened.
  const BatchEntry cont{3, next, Blocks(0), LogitsWanted::kLast};
  ASSERT_TRUE(engine->Forward({&cont, 1}, &logits).ok());
  EXPECT_EQ(logits, reference);
}

// The presets' checkpoints, and test-gqa's weights under each RoPE scaling type (their config.json
// differs: rope_theta 10000, a short max_position_embeddings, rope_scaling; positions go past the
// original length, where scaling matters).
INSTANTIATE_TEST_SUITE_P(Checkpoints, Golden,
                         ::testing::Values("test-gqa", "test-odd", "rope-linear", "rope-dynamic",
                                           "rope-yarn", "rope-llama3"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

// The committed checkpoints are what make-model writes today.
class GoldenPreset : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenPreset, MakeModelStillWritesTheCommittedCheckpoint) {
  auto preset = FindModelPreset(GetParam());
  ASSERT_TRUE(preset.ok());
  fs::path tmp =
      fs::temp_directory_path() / ("bitserve_golden_" + std::to_string(getpid()) + GetParam());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, tmp, {}).ok());
  for (const char* file : {"model.safetensors", "config.json"}) {
    EXPECT_EQ(ReadAll(tmp / file), ReadAll(kGoldenRoot / GetParam() / "model" / file))
        << file << ": make-model output changed; regenerate tests/data/golden (make_golden.py)";
  }
  fs::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(Presets, GoldenPreset, ::testing::Values("test-gqa", "test-odd"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace bitserve
