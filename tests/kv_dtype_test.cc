// What the compressed KV cache costs, as CI checks it on the CPU engine (which quantizes on write
// exactly as the CUDA engine does, kernels/kv_cache_format.h): the accuracy targets.
//  - int4 perplexity of models/shakespeare-dense (the CI excerpt of the held-out split) within 5%
//    of float32's (and int8 within 1%).
//  - int8 greedy tokens on the golden checkpoints. The target, "identical to float32", is
//    NOT met and cannot be by any lossy cache on these checkpoints: they are random-weight models
//    whose top logits are often within a few percent of a standard deviation of each other, and
//    every int8 activation quantization downstream amplifies a small change in attention into a
//    one-step rounding change. bf16 keys and values (the GPU default) change 1 of the 4 golden
//    generations of each checkpoint too; int8 changes 2 (bench/kv_quality_check golden,
//    docs/quality.md). So this test checks what does hold: with the same prefix, int8 picks
//    float32's greedy token except where float32's own top two logits are within kTieMargin row
//    standard deviations (a near tie; measured flips are within 0.11, bf16's within 0.10), both
//    for every teacher-forced row of prompt + golden continuation and at the first step where a
//    greedy generation diverges; and int8's logit error stays within 1.5x of bf16's (measured
//    1.2x). The check separates the formats: int4 flips rows at gaps up to 0.94.
//    int8 and int4 run with their default Hadamard rotation of q and k (EngineOptions::
//    kv_rotation; measured with it, 2026-12-07: int8 logit error 1.15x / 1.22x bf16's on test-gqa /
//    test-odd, every flip a near tie; excerpt perplexity f32 66.5105, int8 66.5148, int4 66.5795).
//  - the rotation itself (KvRotation.*, TrainedModelKv.RotationNone*): none reproduces the cache
//    as it was before the rotation existed, hadamard keeps float32 attention, and it takes outlier
//    key channels out of the int8 / int4 error.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <span>

#include "base/file_io.h"
#include "gtest/gtest.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/hadamard.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/engine/paged_kv_cache.h"
#include "runtime/generation/generation.h"
#include "runtime/generation/perplexity.h"
#include "runtime/text/tokenizer/tokenizer.h"
#include "tests/logit_checks.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

constexpr double kTieMargin = 0.15;
// KvRotation tests' bounds (measured values in the tests' comments).
constexpr double kRotatedF32Layer0Error = 1e-5;
constexpr double kRotatedF32LogitError = 0.03;
constexpr double kOutlierGain = 0.5;
constexpr double kOutlierBackToClean = 1.5;

std::unique_ptr<Engine> CpuEngineWith(const fs::path& model, KvDtype dtype,
                                      std::optional<KvRotation> rotation = std::nullopt) {
  EngineOptions options;
  options.max_sequences = 1;
  options.kv_dtype = dtype;
  options.kv_rotation = rotation;
  auto engine = LoadEngine(model, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return nullptr;
  EXPECT_EQ((*engine)->kv_dtype(), dtype);
  EXPECT_EQ((*engine)->kv_rotation(), rotation.value_or(DefaultKvRotation(dtype)));
  return *std::move(engine);
}

class GoldenGreedy : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenGreedy, Int8DiffersFromFloat32OnlyAtNearTies) {
  const fs::path dir = fs::path("tests/data/golden") / GetParam();
  auto text = ReadFileToString(dir / "reference.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json reference = nlohmann::json::parse(*text);
  auto f32 = CpuEngineWith(dir / "model", KvDtype::kF32);
  auto bf16 = CpuEngineWith(dir / "model", KvDtype::kBf16);
  auto int8 = CpuEngineWith(dir / "model", KvDtype::kInt8);
  ASSERT_TRUE(f32 && bf16 && int8);
  const size_t vocab = f32->config().vocab_size;
  int rows = 0, row_flips = 0, identical = 0, sequences = 0;
  double bf16_error = 0, int8_error = 0;
  for (const nlohmann::json& sequence : reference["sequences"]) {
    GenerateRequest request;
    request.prompt = sequence["prompt_ids"].get<std::vector<int32_t>>();
    request.max_new_tokens = static_cast<int>(sequence["generated_ids"].size());
    request.ignore_eos = true;

    // Teacher-forced: every row of prompt + golden continuation.
    std::vector<int32_t> ids = request.prompt;
    for (int32_t t : sequence["generated_ids"].get<std::vector<int32_t>>()) ids.push_back(t);
    const std::vector<int32_t> table = IdentityBlockTable(*f32);
    const BatchEntry entry{0, ids, table, LogitsWanted::kAll};
    std::vector<float> want, got, half;
    ASSERT_TRUE(f32->Forward({&entry, 1}, &want).ok());
    ASSERT_TRUE(int8->Forward({&entry, 1}, &got).ok());
    ASSERT_TRUE(bf16->Forward({&entry, 1}, &half).ok());
    for (size_t r = 0; r < ids.size(); ++r) {
      const std::span<const float> w(want.data() + r * vocab, vocab);
      const std::span<const float> g(got.data() + r * vocab, vocab);
      int8_error += RelativeL2(g, w);
      bf16_error += RelativeL2(std::span<const float>(half.data() + r * vocab, vocab), w);
      ++rows;
      const int32_t choice = ArgMax(g);
      if (choice == ArgMax(w)) continue;
      ++row_flips;
      EXPECT_LE(GapInRowSd(w, choice), kTieMargin) << GetParam() << " row " << r;
    }

    // Greedy generation: identical up to the first difference, which is a near tie of float32's
    // logits at that step (same prefix on both sides).
    std::vector<float> step_logits;
    auto a = Generate(*f32, nullptr, request, {}, nullptr, &step_logits);
    auto b = Generate(*int8, nullptr, request);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
    ++sequences;
    const auto diverge = std::mismatch(a->tokens.begin(), a->tokens.end(), b->tokens.begin());
    if (diverge.first == a->tokens.end()) {
      ++identical;
      continue;
    }
    const size_t step = diverge.first - a->tokens.begin();
    EXPECT_LE(GapInRowSd({step_logits.data() + step * vocab, vocab}, *diverge.second), kTieMargin)
        << GetParam() << " prompt of " << request.prompt.size() << ": int8 left float32's greedy "
        << "tokens at step " << step << " without a near tie";
  }
  EXPECT_LE(int8_error, 1.5 * bf16_error);
  std::cout << GetParam() << ": int8 argmax differs on " << row_flips << " of " << rows
            << " rows (all near ties), mean logit error int8 " << int8_error / rows << " vs bf16 "
            << bf16_error / rows << "; " << identical << " of " << sequences
            << " greedy generations identical to float32" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenGreedy, ::testing::Values("test-gqa", "test-odd"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(TrainedModelKv, Int4PerplexityWithinFivePercentOfFloat32) {
  const fs::path dir = "models/shakespeare-dense";
  double f32_ppl = 0;
  std::vector<int32_t> ids;
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kInt8, KvDtype::kInt4}) {
    auto engine = CpuEngineWith(dir, dtype);
    ASSERT_NE(engine, nullptr);
    if (ids.empty()) ids = ExcerptIds(dir, engine->config().bos_token_id);
    ASSERT_FALSE(ids.empty());
    auto r = ComputePerplexity(*engine, ids, 256, 128);
    ASSERT_TRUE(r.ok()) << r.status();
    std::cout << "shakespeare-dense excerpt, " << KvDtypeName(dtype) << " KV: ppl " << r->ppl
              << std::endl;
    if (dtype == KvDtype::kF32) f32_ppl = r->ppl;
    if (dtype == KvDtype::kInt4) {
      EXPECT_LE(r->ppl, 1.05 * f32_ppl) << "f32 " << f32_ppl;
    } else if (dtype == KvDtype::kInt8) {
      EXPECT_LE(std::fabs(r->ppl / f32_ppl - 1), 0.01) << "f32 " << f32_ppl;
    }
  }
}

// --kv-rotation none is the cache as it was before the rotation existed: the excerpt's int8 and
// int4 perplexities are the values this tree measured then (2026-12-07, before the rotation; the
// float32 sums are deterministic, so they repeat to the last digit printed).
TEST(TrainedModelKv, RotationNoneReproducesTheUnrotatedCache) {
  const fs::path dir = "models/shakespeare-dense";
  std::vector<int32_t> ids;
  for (auto [dtype, before] :
       {std::pair{KvDtype::kInt8, 66.52561804483422}, {KvDtype::kInt4, 66.49051758690487}}) {
    auto engine = CpuEngineWith(dir, dtype, KvRotation::kNone);
    ASSERT_NE(engine, nullptr);
    if (ids.empty()) ids = ExcerptIds(dir, engine->config().bos_token_id);
    ASSERT_FALSE(ids.empty());
    auto r = ComputePerplexity(*engine, ids, 256, 128);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NEAR(r->ppl, before, 1e-9 * before) << KvDtypeName(dtype);
  }
}

// The rotation is orthonormal, so with a float32 cache (nothing quantized) it changes q . k only
// by float32 rounding: layer 0's attention output moves by ~1e-7 (measured 2.5e-7; bound 1e-5).
// Later layers see that through their int8 activation quantization, where a rounding tie
// decided the other way is a whole step: on this random-weight checkpoint the logits then move
// as bf16 keys move them (measured worst row 1.4%, bf16 KV's worst is 5%: docs/quality.md), with
// no argmax flip. A rotation of q alone or k alone would move every row by O(1).
TEST(KvRotation, KeepsFloat32Attention) {
  const fs::path dir = "tests/data/golden/test-gqa";
  auto text = ReadFileToString(dir / "reference.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json reference = nlohmann::json::parse(*text);
  // Layer 0's attention output (attn_sub_norm's output, traced as "o_in"): its q, k and v are
  // the same with and without the rotation, so only float32 rounding of q . k differs there.
  std::vector<float> o_plain, o_rotated;
  auto engine_tracing = [&](std::optional<KvRotation> rotation, std::vector<float>* o) {
    EngineOptions options;
    options.max_sequences = 1;
    options.kv_dtype = KvDtype::kF32;
    options.kv_rotation = rotation;
    options.trace = [o](const std::string& name, int layer, const float* x, int64_t rows,
                        int64_t dim) {
      if (name == "o_in" && layer == 0) o->insert(o->end(), x, x + rows * dim);
    };
    auto engine = LoadEngine(dir / "model", options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  };
  auto plain = engine_tracing(std::nullopt, &o_plain);
  auto rotated = engine_tracing(KvRotation::kHadamard, &o_rotated);
  ASSERT_TRUE(plain && rotated);
  EXPECT_EQ(plain->kv_rotation(), KvRotation::kNone);
  EXPECT_EQ(rotated->kv_rotation(), KvRotation::kHadamard);
  const size_t vocab = plain->config().vocab_size;
  double worst = 0;
  int rows = 0, flips = 0;
  for (const nlohmann::json& sequence : reference["sequences"]) {
    std::vector<int32_t> ids = sequence["prompt_ids"].get<std::vector<int32_t>>();
    for (int32_t t : sequence["generated_ids"].get<std::vector<int32_t>>()) ids.push_back(t);
    const std::vector<int32_t> table = IdentityBlockTable(*plain);
    const BatchEntry entry{0, ids, table, LogitsWanted::kAll};
    std::vector<float> want, got;
    ASSERT_TRUE(plain->Forward({&entry, 1}, &want).ok());
    ASSERT_TRUE(rotated->Forward({&entry, 1}, &got).ok());
    for (size_t r = 0; r < ids.size(); ++r, ++rows) {
      const std::span<const float> w(want.data() + r * vocab, vocab);
      const std::span<const float> g(got.data() + r * vocab, vocab);
      worst = std::max(worst, RelativeL2(g, w));
      flips += ArgMax(g) != ArgMax(w);
    }
  }
  ASSERT_EQ(o_plain.size(), o_rotated.size());
  const double layer0 = RelativeL2(o_rotated, o_plain);
  std::cout << "f32 KV, hadamard vs none: layer 0 attention output error " << layer0
            << ", worst logit row error " << worst << ", argmax flips " << flips << " of " << rows
            << std::endl;
  EXPECT_LE(layer0, kRotatedF32Layer0Error);
  EXPECT_LE(worst, kRotatedF32LogitError);
  EXPECT_EQ(flips, 0);
}

// Keys with outlier channels through the CPU engine's own cache path (rotate q and k, PagedKvCache
// Write, Gather, cpu::AttentionCausal: CpuEngine::Attention and SelfAttention): the synthetic case
// of docs/quality.md (bench/kv_quality_check attention) at 2K context, head_dim 128, 4 of 128
// key channels drawn from N(20, 20). Unrotated, the outliers set each row's int8 / int4 scale and
// the attention output's error is several times the no-outlier level; rotated, it is back there.
// Measured: int8 1.38% clean, 5.54% with outliers, 1.28% rotated; int4 23.9%, 45.5%, 18.7%.
double OutlierAttentionError(KvDtype dtype, bool rotate, float outlier) {
  ModelConfig config;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 1;
  config.head_dim = 128;
  config.hidden_size = 512;
  constexpr int kContext = 2048, kQueries = 8, kDim = 128, kHeads = 4, kBlock = 16;
  std::mt19937 rng(20);
  std::normal_distribution<float> normal;
  std::vector<float> k(int64_t{kContext} * kDim), v(k.size()), q(int64_t{kQueries} * kHeads * kDim);
  for (int p = 0; p < kContext; ++p) {
    for (int d = 0; d < kDim; ++d) {
      const bool is_outlier = d == 7 || d == 42 || d == 77 || d == 100;
      k[p * kDim + d] = is_outlier ? outlier * (1 + normal(rng)) : normal(rng);
      v[p * kDim + d] = normal(rng);
    }
  }
  // Scores q.k / sqrt(128) with a standard deviation of about 2.5 (neither uniform nor one-hot).
  for (float& x : q) x = 2.5f * normal(rng) / std::sqrt(1.0f + 4 * outlier * outlier * 2 / kDim);
  const cpu::AttentionShape shape{kHeads, 1, kDim, 1.0f / std::sqrt(float{kDim})};
  std::vector<float> ref(q.size()), out(q.size());
  cpu::AttentionCausal(q.data(), kQueries, kContext - kQueries, k.data(), v.data(), kDim, shape,
                       ref.data());
  if (rotate) {
    cpu::HadamardRotateRows(q.data(), int64_t{kQueries} * kHeads, kDim);
    cpu::HadamardRotateRows(k.data(), kContext, kDim);
  }
  PagedKvCache cache(config, kContext / kBlock, kBlock, dtype);
  std::vector<int32_t> table(kContext / kBlock);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(table.size() - 1 - i);
  for (int p = 0; p < kContext; ++p) cache.Write(0, table, p, &k[p * kDim], &v[p * kDim]);
  std::vector<float> kq(k.size()), vq(v.size());
  cache.Gather(0, table, kContext, kq.data(), vq.data());
  cpu::AttentionCausal(q.data(), kQueries, kContext - kQueries, kq.data(), vq.data(), kDim, shape,
                       out.data());
  return RelativeL2(out, ref);
}

TEST(KvRotation, OutlierKeyChannelsNoLongerSetTheQuantizationError) {
  for (KvDtype dtype : {KvDtype::kInt8, KvDtype::kInt4}) {
    const double clean = OutlierAttentionError(dtype, false, 0.0f);
    const double plain = OutlierAttentionError(dtype, false, 20.0f);
    const double rotated = OutlierAttentionError(dtype, true, 20.0f);
    std::cout << KvDtypeName(dtype) << " attention error: no outliers " << clean
              << ", 4 outlier channels " << plain << ", rotated " << rotated << std::endl;
    EXPECT_LE(rotated, kOutlierGain * plain) << KvDtypeName(dtype);
    EXPECT_LE(rotated, kOutlierBackToClean * clean) << KvDtypeName(dtype);
  }
}

// A pipeline of stage engines in one process (what `serve --pipeline-stages` runs) rotates as
// the options say in every stage: its logits are near the unsplit engine's with the same rotation
// and far from the other rotation's (the bf16 hidden-state transfer rounds, so not bit for bit;
// measured 2026-12-07: 0.019 / 0.016 rotated / unrotated against 0.137 between the rotations).
TEST(KvRotation, PipelineStagesFollowTheOption) {
  const fs::path model = "tests/data/golden/test-gqa/model";
  const std::vector<int32_t> ids = {1, 17, 300, 42, 7, 911, 5, 64, 2, 88, 123, 456};
  auto logits = [&](std::optional<KvRotation> rotation, int stages, KvRotation want) {
    EngineOptions options;
    options.max_sequences = 1;
    options.kv_dtype = KvDtype::kInt4;
    options.kv_rotation = rotation;
    options.local_pipeline_stages = stages;
    options.pp_transfer = TransferDtype::kBf16;
    auto engine = LoadEngine(model, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::vector<float> out;
    if (!engine.ok()) return out;
    EXPECT_EQ((*engine)->kv_rotation(), want);
    const std::vector<int32_t> table = IdentityBlockTable(**engine);
    const BatchEntry entry{0, ids, table, LogitsWanted::kAll};
    EXPECT_TRUE((*engine)->Forward({&entry, 1}, &out).ok());
    return out;
  };
  const std::vector<float> whole_rotated = logits(std::nullopt, 1, KvRotation::kHadamard);
  const std::vector<float> whole_plain = logits(KvRotation::kNone, 1, KvRotation::kNone);
  const std::vector<float> split_rotated = logits(std::nullopt, 2, KvRotation::kHadamard);
  const std::vector<float> split_plain = logits(KvRotation::kNone, 2, KvRotation::kNone);
  ASSERT_FALSE(whole_rotated.empty() || split_rotated.empty() || split_plain.empty());
  EXPECT_LT(RelativeL2(split_rotated, whole_rotated), RelativeL2(split_rotated, whole_plain));
  EXPECT_LT(RelativeL2(split_plain, whole_plain), RelativeL2(split_plain, whole_rotated));
  std::cout << "int4, 2 stages against 1: rotated " << RelativeL2(split_rotated, whole_rotated)
            << ", unrotated " << RelativeL2(split_plain, whole_plain) << "; rotated against "
            << "unrotated " << RelativeL2(whole_rotated, whole_plain) << std::endl;
}

TEST(CpuEngineKv, RejectsWhatTheFormatsCannotHold) {
  // test-odd has head_dim 32 (int4 fine); a kv_dtype outside the enum is refused at the boundary.
  EngineOptions options;
  options.kv_dtype = static_cast<KvDtype>(9);
  EXPECT_EQ(LoadEngine("tests/data/golden/test-odd/model", options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.kv_dtype = KvDtype::kInt8;
  options.kv_rotation = static_cast<KvRotation>(5);
  const absl::Status rotation = LoadEngine("tests/data/golden/test-odd/model", options).status();
  EXPECT_EQ(rotation.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rotation.message().find("kv_rotation"), std::string::npos) << rotation;
}

}  // namespace
}  // namespace bitserve
