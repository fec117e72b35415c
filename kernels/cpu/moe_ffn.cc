#include "kernels/cpu/moe_ffn.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/check.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitserve::cpu {
namespace {

template <typename T>
T* Sized(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

}  // namespace

void BitnetFfn(const FfnWeights& f, const int8_t* xq, const float* x_scales, int64_t rows,
               int64_t hidden, float eps, MoeScratch& s, float* y,
               const std::function<void(const float* x, int64_t rows, int64_t dim)>& down_in) {
  const int64_t inter = f.gate.rows;
  float* g = Sized(s.g, rows * inter);
  float* u = Sized(s.u, rows * inter);
  TernaryMatmul(xq, x_scales, rows, f.gate.values.data(), inter, hidden, f.gate.scale, g);
  TernaryMatmul(xq, x_scales, rows, f.up.values.data(), inter, hidden, f.up.scale, u);
  Relu2Mul(g, u, rows * inter, g);
  RmsNorm(g, f.sub_norm.data(), rows, inter, eps, g);
  if (down_in) down_in(g, rows, inter);
  int8_t* dq = Sized(s.dq, rows * inter);
  float* ds = Sized(s.d_scales, rows);
  ActQuantPerToken(g, rows, inter, dq, ds);
  TernaryMatmul(dq, ds, rows, f.down.values.data(), hidden, inter, f.down.scale, y);
}

void RouteTopK(const float* logits, int64_t m, int num_experts, int k, bool norm_topk_prob,
               int32_t* experts, float* weights) {
  std::vector<float> p(num_experts);
  std::vector<int32_t> order(num_experts);
  for (int64_t r = 0; r < m; ++r) {
    const float* l = logits + r * num_experts;
    const float mx = *std::max_element(l, l + num_experts);
    float sum = 0.0f;
    for (int e = 0; e < num_experts; ++e) sum += (p[e] = std::exp(l[e] - mx));
    for (int e = 0; e < num_experts; ++e) p[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float top_sum = 0.0f;
    for (int j = 0; j < k; ++j) top_sum += p[order[j]];
    for (int j = 0; j < k; ++j) {
      experts[r * k + j] = order[j];
      weights[r * k + j] = norm_topk_prob ? p[order[j]] / top_sum : p[order[j]];
    }
  }
}

void RouteTokens(const MoeWeights& w, const MoeShape& shape, const float* n, int64_t m,
                 MoeScratch& s) {
  float* logits = Sized(s.logits, m * shape.num_experts);
  Bf16Matmul(n, m, w.router.data(), shape.num_experts, shape.hidden, logits);
  RouteTopK(logits, m, shape.num_experts, shape.top_k, shape.norm_topk_prob,
            Sized(s.experts, m * shape.top_k), Sized(s.weights, m * shape.top_k));
}

void RunExperts(const MoeWeights& w, const MoeShape& shape, const int8_t* xq, const float* x_scales,
                const int32_t* expert_ids, int64_t rows, float* y, MoeScratch& s) {
  const int64_t h = shape.hidden;
  for (int e = 0; e < shape.num_experts; ++e) {
    s.rows.clear();
    for (int64_t i = 0; i < rows; ++i) {
      if (expert_ids[i] == e) s.rows.push_back(static_cast<int32_t>(i));
    }
    const int64_t count = static_cast<int64_t>(s.rows.size());
    if (count == 0) continue;
    BITSERVE_CHECK(w.holds(e)) << "rows for expert " << e << ", which is not loaded here";
    int8_t* gathered = Sized(s.xq, count * h);
    float* scales = Sized(s.x_scales, count);
    for (int64_t j = 0; j < count; ++j) {
      std::copy_n(xq + int64_t{s.rows[j]} * h, h, gathered + j * h);
      scales[j] = x_scales[s.rows[j]];
    }
    float* ey = Sized(s.y, count * h);
    BitnetFfn(w.experts[e], gathered, scales, count, h, shape.eps, s, ey);
    for (int64_t j = 0; j < count; ++j) std::copy_n(ey + j * h, h, y + int64_t{s.rows[j]} * h);
  }
}

void CombineExperts(const float* weights, const float* expert_out, int64_t m, int k, int64_t hidden,
                    float* out) {
  for (int64_t r = 0; r < m; ++r) {
    float* o = out + r * hidden;
    for (int j = 0; j < k; ++j) {
      const float wj = weights[r * k + j];
      const float* y = expert_out + (r * k + j) * hidden;
      if (j == 0) {
        for (int64_t i = 0; i < hidden; ++i) o[i] = wj * y[i];
      } else {
        for (int64_t i = 0; i < hidden; ++i) {
          const float p = wj * y[i];
          o[i] = o[i] + p;
        }
      }
    }
  }
}

void AddSharedExpert(const MoeWeights& w, const MoeShape& shape, const float* n, const int8_t* nq,
                     const float* n_scales, int64_t m, float* out, MoeScratch& s) {
  if (!w.has_shared()) return;
  const int64_t h = shape.hidden;
  float* gate = Sized(s.gate, m);
  Bf16Matmul(n, m, w.shared_gate.data(), 1, h, gate);
  float* y = Sized(s.y, m * h);
  BitnetFfn(w.shared, nq, n_scales, m, h, shape.eps, s, y);
  for (int64_t r = 0; r < m; ++r) {
    const float g = 1.0f / (1.0f + std::exp(-gate[r]));
    for (int64_t i = 0; i < h; ++i) {
      const float p = g * y[r * h + i];
      out[r * h + i] = out[r * h + i] + p;
    }
  }
}

void MoeFeedForward(const MoeWeights& w, const MoeShape& shape, const float* n, int64_t m,
                    float* out, MoeScratch* scratch) {
  MoeScratch local;
  MoeScratch& s = scratch != nullptr ? *scratch : local;
  const int64_t h = shape.hidden;
  const int k = shape.top_k;
  BITSERVE_CHECK(static_cast<int>(w.experts.size()) == shape.num_experts)
      << "MoE weights do not match the shape";
  RouteTokens(w, shape, n, m, s);
  int8_t* nq = Sized(s.nq, m * h);
  float* n_scales = Sized(s.n_scales, m);
  ActQuantPerToken(n, m, h, nq, n_scales);
  // Every slot's row (one quantization of n shared by the token's k experts) through its expert.
  int8_t* slot_q = Sized(s.dispatch_q, m * k * h);
  float* slot_scales = Sized(s.dispatch_scales, m * k);
  for (int64_t i = 0; i < m * k; ++i) {
    std::copy_n(nq + (i / k) * h, h, slot_q + i * h);
    slot_scales[i] = n_scales[i / k];
  }
  float* expert_out = Sized(s.expert_out, m * k * h);
  RunExperts(w, shape, slot_q, slot_scales, s.experts.data(), m * k, expert_out, s);
  CombineExperts(s.weights.data(), expert_out, m, k, h, out);
  AddSharedExpert(w, shape, n, nq, n_scales, m, out, s);
}

}  // namespace bitserve::cpu
