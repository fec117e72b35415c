// What the KV cache element types cost in accuracy, on the CPU reference (no GPU needed; the CPU
// engine stores exactly the CUDA engine's bytes, kernels/kv_cache_format.h). Prints markdown rows
// for docs/quality.md.
//   kv_quality_check golden DIR...
//     golden checkpoints (tests/data/golden/NAME): for bf16, int8 and int4 against float32, the
//     relative L2 error of each logit row (prefill of prompt + golden continuation), argmax
//     agreement (and, where it differs, how close float32's own top two logits were: their gap in
//     row standard deviations), and greedy generations identical to float32's; int8 and int4
//     unrotated and with the Hadamard rotation of q and k (EngineOptions::kv_rotation)
//   kv_quality_check attention
//     synthetic attention at long context with outlier key channels: relative L2 error of the
//     output per dtype
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/file_io.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cpu/kv_quant.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/generation/generation.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

constexpr KvDtype kCompressed[] = {KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4};

double RelativeL2(const float* a, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double{a[i]} - ref[i]) * (double{a[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int Golden(const std::vector<std::string>& dirs) {
  std::printf(
      "| checkpoint | KV | logit rows | rel. L2 error, mean / worst row | argmax agreement "
      "| largest f32 gap at a flip (row sd) | greedy tokens equal to f32 | generations "
      "identical |\n|---|---|---:|---|---:|---:|---:|---:|\n");
  for (const std::string& d : dirs) {
    const fs::path dir(d);
    auto text = ReadFileToString(dir / "reference.json");
    if (!text.ok()) {
      std::fprintf(stderr, "%s\n", text.status().ToString().c_str());
      return 1;
    }
    const nlohmann::json reference = nlohmann::json::parse(*text);
    auto load = [&](KvDtype dtype, KvRotation rotation) {
      EngineOptions options;
      options.max_sequences = 1;
      options.kv_dtype = dtype;
      options.kv_rotation = rotation;
      auto engine = LoadEngine(dir / "model", options);
      if (!engine.ok()) std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
      return engine.ok() ? *std::move(engine) : nullptr;
    };
    auto f32 = load(KvDtype::kF32, KvRotation::kNone);
    if (!f32) return 1;
    const int64_t vocab = f32->config().vocab_size;
    // Each quantized type unrotated and rotated (EngineOptions::kv_rotation, its default).
    std::vector<std::pair<KvDtype, KvRotation>> kinds;
    for (KvDtype dtype : kCompressed) {
      kinds.push_back({dtype, KvRotation::kNone});
      if (dtype != KvDtype::kBf16) kinds.push_back({dtype, KvRotation::kHadamard});
    }
    for (auto [dtype, rotation] : kinds) {
      auto engine = load(dtype, rotation);
      if (!engine) return 1;
      double sum = 0, worst = 0, flip_gap = 0;
      int64_t rows = 0, agree = 0, tokens = 0, equal = 0, identical = 0, sequences = 0;
      for (const nlohmann::json& s : reference["sequences"]) {
        std::vector<int32_t> prompt = s["prompt_ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> ids = prompt;
        for (int32_t t : s["generated_ids"].get<std::vector<int32_t>>()) ids.push_back(t);
        const std::vector<int32_t> table = IdentityBlockTable(*f32);
        const BatchEntry entry{0, ids, table, LogitsWanted::kAll};
        std::vector<float> want, got;
        if (!f32->Forward({&entry, 1}, &want).ok() || !engine->Forward({&entry, 1}, &got).ok()) {
          return 1;
        }
        for (size_t r = 0; r < ids.size(); ++r) {
          const double e = RelativeL2(got.data() + r * vocab, want.data() + r * vocab, vocab);
          sum += e;
          worst = std::max(worst, e);
          ++rows;
          const float* w = want.data() + r * vocab;
          const int32_t a = ArgMax({got.data() + r * vocab, static_cast<size_t>(vocab)});
          const int32_t b = ArgMax({w, static_cast<size_t>(vocab)});
          agree += a == b;
          if (a != b) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < vocab; ++i) mean += w[i];
            mean /= vocab;
            for (int64_t i = 0; i < vocab; ++i) var += (w[i] - mean) * (w[i] - mean);
            flip_gap = std::max(flip_gap, (double{w[b]} - w[a]) / std::sqrt(var / vocab));
          }
        }
        GenerateRequest request;
        request.prompt = prompt;
        request.max_new_tokens = static_cast<int>(s["generated_ids"].size());
        request.ignore_eos = true;
        auto a = Generate(*f32, nullptr, request);
        auto b = Generate(*engine, nullptr, request);
        if (!a.ok() || !b.ok()) return 1;
        size_t same = 0;
        while (same < a->tokens.size() && same < b->tokens.size() &&
               a->tokens[same] == b->tokens[same]) {
          ++same;
        }
        tokens += static_cast<int64_t>(a->tokens.size());
        equal += static_cast<int64_t>(same);
        identical += a->tokens == b->tokens;
        ++sequences;
      }
      std::printf(
          "| %s | %s%s | %lld | %.2e / %.2e | %lld / %lld | %.3f | %lld / %lld (before the "
          "first difference) | %lld / %lld |\n",
          dir.filename().string().c_str(), KvDtypeName(dtype),
          rotation == KvRotation::kHadamard ? ", rotated" : "", static_cast<long long>(rows),
          sum / rows, worst, static_cast<long long>(agree), static_cast<long long>(rows), flip_gap,
          static_cast<long long>(equal), static_cast<long long>(tokens),
          static_cast<long long>(identical), static_cast<long long>(sequences));
    }
  }
  return 0;
}

// Keys: head_dim 128, channels N(0, 1) except 4 outlier channels N(F, F) (a large, mostly
// one-signed bias, as real models' outlier key channels have); values N(0, 1). 16 query tokens at
// the end of the context, 4 query heads per KV head, q scaled so the attention scores have a
// standard deviation of 2.5 (a softmax that is neither uniform nor one-hot). Each dtype's output
// against the float32 keys and values; "rotated": q and k Hadamard-rotated before k is quantized
// (kernels/cpu/hadamard.h, the engines' EngineOptions::kv_rotation).
int Attention() {
  constexpr int kDim = 128, kHeads = 4, kQueries = 16;
  constexpr int kOutlierChannels[] = {7, 42, 77, 100};
  std::printf(
      "| context | outlier channels | bf16 | int8 | int4 | int8, rotated | int4, rotated |\n"
      "|---:|---|---:|---:|---:|---:|---:|\n");
  for (int context : {4096, 16384, 32768}) {
    for (float factor : {1.0f, 10.0f, 50.0f}) {
      std::mt19937 rng(static_cast<uint32_t>(context) * 31 + static_cast<uint32_t>(factor));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> sd(kDim, 1.0f), mean(kDim, 0.0f);
      if (factor > 1) {
        for (int c : kOutlierChannels) sd[c] = mean[c] = factor;
      }
      std::vector<float> k(static_cast<size_t>(context) * kDim), v(k.size());
      for (int p = 0; p < context; ++p) {
        for (int c = 0; c < kDim; ++c) {
          k[p * kDim + c] = mean[c] + sd[c] * normal(rng);
          v[p * kDim + c] = normal(rng);
        }
      }
      double variance = 0;  // of q . k / sqrt(d) for q ~ N(0, 1)
      for (int c = 0; c < kDim; ++c) variance += (sd[c] * sd[c] + mean[c] * mean[c]) / kDim;
      const float q_scale = static_cast<float>(2.5 / std::sqrt(variance));
      std::vector<float> q(static_cast<size_t>(kQueries) * kHeads * kDim);
      for (float& x : q) x = q_scale * normal(rng);
      const cpu::AttentionShape shape{kHeads, 1, kDim, 1.0f / std::sqrt(float{kDim})};
      std::vector<float> ref(q.size()), out(q.size());
      cpu::AttentionCausal(q.data(), kQueries, context - kQueries, k.data(), v.data(), kDim, shape,
                           ref.data());
      std::printf("| %dK | %s |", context / 1024,
                  factor > 1 ? (std::to_string(static_cast<int>(factor)) + "x (4 of 128)").c_str()
                             : "none");
      std::vector<float> k_rot = k, q_rot = q;
      cpu::HadamardRotateRows(k_rot.data(), context, kDim);
      cpu::HadamardRotateRows(q_rot.data(), static_cast<int64_t>(kQueries) * kHeads, kDim);
      std::vector<std::pair<KvDtype, bool>> columns;
      for (KvDtype dtype : kCompressed) columns.push_back({dtype, false});
      for (KvDtype dtype : kCompressed) {
        if (dtype != KvDtype::kBf16) columns.push_back({dtype, true});
      }
      for (auto [dtype, rotated] : columns) {
        const std::vector<float>& keys = rotated ? k_rot : k;
        std::vector<float> kq(k.size()), vq(v.size());
        std::vector<uint8_t> data(KvHeadBytes(dtype, kDim));
        uint16_t params[2];
        for (int p = 0; p < context; ++p) {
          for (auto [x, y] : {std::pair{&keys, &kq}, {&v, &vq}}) {
            cpu::QuantizeKvRow(dtype, x->data() + p * kDim, 1, kDim, data.data(), params);
            cpu::DequantizeKvRow(dtype, data.data(), params, 1, kDim, y->data() + p * kDim);
          }
        }
        cpu::AttentionCausal((rotated ? q_rot : q).data(), kQueries, context - kQueries, kq.data(),
                             vq.data(), kDim, shape, out.data());
        std::printf(" %.2e |",
                    RelativeL2(out.data(), ref.data(), static_cast<int64_t>(out.size())));
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace bitserve

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "golden" && argc > 2) {
    return bitserve::Golden(std::vector<std::string>(argv + 2, argv + argc));
  }
  if (mode == "attention") return bitserve::Attention();
  std::fprintf(stderr, "usage: kv_quality_check golden DIR... | kv_quality_check attention\n");
  return 2;
}
