// The trained fixtures in models/ (tools/train/): they load, and bitserve's held-out perplexity
// matches the PyTorch value stored beside each model (expected_perplexity.json) within 1%.
#include <filesystem>

#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/generation/perplexity.h"
#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

// The CI check uses the excerpt (~2.7K tokens); the full split is docs/quality.md's number.
constexpr char kExcerpt[] = "models/data/shakespeare-valid-excerpt.txt";

class TrainedModel : public ::testing::TestWithParam<const char*> {};

TEST_P(TrainedModel, PerplexityMatchesPyTorch) {
  const fs::path dir = fs::path("models") / GetParam();
  auto expected_text = ReadFileToString(dir / "expected_perplexity.json");
  ASSERT_TRUE(expected_text.ok()) << expected_text.status();
  const nlohmann::json expected_doc = nlohmann::json::parse(*expected_text);
  nlohmann::json expected;
  for (const nlohmann::json& r : expected_doc["results"]) {
    if (r["input"] == kExcerpt) expected = r;
  }
  ASSERT_TRUE(expected.is_object()) << "no result for " << kExcerpt << " in " << dir;

  EngineOptions options;
  options.max_sequences = 1;
  auto engine = LoadEngine(dir, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->config().is_moe(), std::string(GetParam()).find("moe") != std::string::npos);
  auto tokenizer = Tokenizer::Load(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto text = ReadFileToString(kExcerpt);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<int32_t> ids = {(*engine)->config().bos_token_id};
  const std::vector<int32_t> body = (*tokenizer)->Encode(*text);
  ids.insert(ids.end(), body.begin(), body.end());

  auto r = ComputePerplexity(**engine, ids, expected["context"].get<int64_t>(),
                             expected["stride"].get<int64_t>());
  ASSERT_TRUE(r.ok()) << r.status();
  // Same tokens as Hugging Face tokenizers produced for the reference.
  EXPECT_EQ(r->tokens, expected["tokens"].get<int64_t>());
  const double want = expected["ppl"].get<double>();
  EXPECT_NEAR(r->ppl, want, 0.01 * want) << "nll " << r->nll << " vs " << expected["nll"];
  std::cout << GetParam() << ": bitserve ppl " << r->ppl << ", PyTorch " << want << " ("
            << expected["source"].get<std::string>() << ")\n";
}

INSTANTIATE_TEST_SUITE_P(Models, TrainedModel,
                         ::testing::Values("shakespeare-dense", "shakespeare-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace bitserve
