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

void MoeFeedForward(const MoeWeights& w, const MoeShape& shape, const float* n, int64_t m,
                    float* out, MoeScratch* scratch) {
  MoeScratch local;
  MoeScratch& s = scratch != nullptr ? *scratch : local;
  const int64_t h = shape.hidden;
  const int num_experts = shape.num_experts, k = shape.top_k;
  const float eps = shape.eps;
  BITSERVE_CHECK(static_cast<int>(w.experts.size()) == num_experts)
      << "MoE weights do not match the shape";

  float* logits = Sized(s.logits, m * num_experts);
  Bf16Matmul(n, m, w.router.data(), num_experts, h, logits);
  int32_t* experts = Sized(s.experts, m * k);
  float* weights = Sized(s.weights, m * k);
  RouteTopK(logits, m, num_experts, k, shape.norm_topk_prob, experts, weights);

  int8_t* nq = Sized(s.nq, m * h);
  float* n_scales = Sized(s.n_scales, m);
  ActQuantPerToken(n, m, h, nq, n_scales);

  // Each expert runs once over the rows routed to it; results land in expert_out[row, slot].
  float* expert_out = Sized(s.expert_out, m * k * h);
  for (int e = 0; e < num_experts; ++e) {
    s.rows.clear();  // row * k + slot
    for (int64_t i = 0; i < m * k; ++i) {
      if (experts[i] == e) s.rows.push_back(static_cast<int32_t>(i));
    }
    const int64_t count = static_cast<int64_t>(s.rows.size());
    if (count == 0) continue;
    int8_t* xq = Sized(s.xq, count * h);
    float* xs = Sized(s.x_scales, count);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t row = s.rows[j] / k;
      std::copy_n(nq + row * h, h, xq + j * h);
      xs[j] = n_scales[row];
    }
    float* y = Sized(s.y, count * h);
    BitnetFfn(w.experts[e], xq, xs, count, h, eps, s, y);
    for (int64_t j = 0; j < count; ++j)
      std::copy_n(y + j * h, h, expert_out + int64_t{s.rows[j]} * h);
  }
  // Weighted sum in top-k order, each product rounded before the add (as torch evaluates it).
  for (int64_t r = 0; r < m; ++r) {
    float* o = out + r * h;
    for (int j = 0; j < k; ++j) {
      const float wj = weights[r * k + j];
      const float* y = expert_out + (r * k + j) * h;
      if (j == 0) {
        for (int64_t i = 0; i < h; ++i) o[i] = wj * y[i];
      } else {
        for (int64_t i = 0; i < h; ++i) {
          const float p = wj * y[i];
          o[i] = o[i] + p;
        }
      }
    }
  }
  if (w.has_shared()) {
    float* gate = Sized(s.gate, m);
    Bf16Matmul(n, m, w.shared_gate.data(), 1, h, gate);
    float* y = Sized(s.y, m * h);
    BitnetFfn(w.shared, nq, n_scales, m, h, eps, s, y);
    for (int64_t r = 0; r < m; ++r) {
      const float g = 1.0f / (1.0f + std::exp(-gate[r]));
      for (int64_t i = 0; i < h; ++i) {
        const float p = g * y[r * h + i];
        out[r * h + i] = out[r * h + i] + p;
      }
    }
  }
}

}  // namespace bitserve::cpu
