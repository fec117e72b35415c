// How far bf16 keys and values (the CUDA engine's KV cache) and a bf16-rounded LM-head activation
// (its cuBLAS LM head) move the logits of the CPU reference itself: the evidence behind the logit
// tolerance of tests/cuda_engine_test.cc. Runs the CPU forward pass (kernels/cpu, one sequence,
// prefill) three times beside the float32 one and prints, per variant, the worst and mean relative
// L2 error of a row and the number of rows whose argmax changed. No GPU needed.
//   kv_precision_check MODEL_DIR [TOKENS]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "base/bf16.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/ternary_matmul.h"
#include "runtime/checkpoint/model_weights.h"
using namespace bitserve;
std::vector<float> Run(const ModelWeights& W, const std::vector<int32_t>& ids, bool bf16_kv,
                       bool bf16_head) {
  const ModelConfig& c = W.config;
  int64_t m = ids.size(), h = c.hidden_size, inter = c.intermediate_size, qd = c.q_dim(),
          kvd = c.kv_dim();
  std::vector<float> x(m * h), a(m * std::max(h, std::max(inter, qd))), q(m * qd), k(m * kvd),
      v(m * kvd), o(m * qd), y(m * h);
  std::vector<int8_t> aq(m * std::max(h, std::max(inter, qd)));
  std::vector<float> s(m);
  std::vector<int32_t> pos(m);
  for (int i = 0; i < m; ++i) pos[i] = i;
  const RopeFrequencies rope = ModelRopeFrequencies(c);
  cpu::Bf16GatherRows(W.embedding.data(), h, ids.data(), m, x.data());
  float eps = c.rms_norm_eps;
  auto lin = [&](const float* in, int64_t dim, const TernaryMatrix& t, float* out) {
    cpu::ActQuantPerToken(in, m, dim, aq.data(), s.data());
    cpu::TernaryMatmul(aq.data(), s.data(), m, t.values.data(), t.rows, t.cols, t.scale, out);
  };
  MoeScratch ffn_scratch;
  for (auto& w : W.layers) {
    cpu::RmsNorm(x.data(), w.input_norm.data(), m, h, eps, a.data());
    cpu::ActQuantPerToken(a.data(), m, h, aq.data(), s.data());
    cpu::TernaryMatmul(aq.data(), s.data(), m, w.q.values.data(), qd, h, w.q.scale, q.data());
    cpu::TernaryMatmul(aq.data(), s.data(), m, w.k.values.data(), kvd, h, w.k.scale, k.data());
    cpu::TernaryMatmul(aq.data(), s.data(), m, w.v.values.data(), kvd, h, w.v.scale, v.data());
    cpu::RopeNeox(q.data(), m, c.num_attention_heads, c.head_dim, pos.data(), rope.inv_freq.data(),
                  rope.attention_scaling);
    cpu::RopeNeox(k.data(), m, c.num_key_value_heads, c.head_dim, pos.data(), rope.inv_freq.data(),
                  rope.attention_scaling);
    if (bf16_kv) {
      for (auto& e : k) e = Bf16ToFloat(FloatToBf16(e));
      for (auto& e : v) e = Bf16ToFloat(FloatToBf16(e));
    }
    cpu::AttentionShape sh{c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                           (float)(1.0 / std::sqrt(1.0 * c.head_dim))};
    cpu::AttentionCausal(q.data(), m, 0, k.data(), v.data(), kvd, sh, o.data());
    cpu::RmsNorm(o.data(), w.attn_sub_norm.data(), m, qd, eps, o.data());
    lin(o.data(), qd, w.o, y.data());
    cpu::AddInPlace(x.data(), y.data(), m * h);
    cpu::RmsNorm(x.data(), w.post_attention_norm.data(), m, h, eps, a.data());
    cpu::ActQuantPerToken(a.data(), m, h, aq.data(), s.data());
    cpu::BitnetFfn(w.ffn, aq.data(), s.data(), m, h, eps, ffn_scratch, y.data());
    cpu::AddInPlace(x.data(), y.data(), m * h);
  }
  cpu::RmsNorm(x.data(), W.final_norm.data(), m, h, eps, x.data());
  if (bf16_head)
    for (auto& e : x) e = Bf16ToFloat(FloatToBf16(e));
  std::vector<float> logits(m * c.vocab_size);
  cpu::Bf16Matmul(x.data(), m, W.lm_head_data(), c.vocab_size, h, logits.data());
  return logits;
}
int main(int argc, char** argv) {
  if (argc < 2) {
    printf("usage: kv_precision_check MODEL_DIR [TOKENS]\n");
    return 2;
  }
  auto W = LoadModelWeights(argv[1]);
  if (!W.ok()) {
    printf("%s\n", W.status().ToString().c_str());
    return 1;
  }
  std::mt19937 rng(1);
  std::vector<int32_t> ids(argc > 2 ? std::atoi(argv[2]) : 48);
  for (auto& i : ids) i = rng() % W->config.vocab_size;
  auto ref = Run(*W, ids, false, false);
  for (auto [kv, head] : {std::pair{true, false}, {false, true}, {true, true}}) {
    auto t = Run(*W, ids, kv, head);
    int64_t V = W->config.vocab_size;
    double worst = 0, sum = 0;
    int flips = 0;
    for (size_t r = 0; r < ids.size(); ++r) {
      double n = 0, d = 0;
      int am = 0, bm = 0;
      for (int64_t i = 0; i < V; ++i) {
        double e = t[r * V + i] - ref[r * V + i];
        n += e * e;
        d += ref[r * V + i] * (double)ref[r * V + i];
        if (ref[r * V + i] > ref[r * V + am]) am = i;
        if (t[r * V + i] > t[r * V + bm]) bm = i;
      }
      double rel = std::sqrt(n / d);
      worst = std::max(worst, rel);
      sum += rel;
      flips += am != bm;
    }
    printf("%s bf16_kv=%d bf16_head=%d: worst rel L2 %.4f, mean %.4f, argmax flips %d of %zu\n",
           argv[1], kv, head, worst, sum / ids.size(), flips, ids.size());
  }
}
