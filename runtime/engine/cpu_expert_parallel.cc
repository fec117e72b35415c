// The MoE block of an expert-parallel CPU rank (EngineOptions::expert_exchange): the pieces of
// cpu::MoeFeedForward (kernels/cpu/moe_ffn.h) with the expert products moved to the ranks that
// own the experts. Every product is per row and the combine runs here in top-k order, so the
// result equals MoeFeedForward's bit for bit whenever results come back as fp32.
//
//   route (router, softmax top-k): slot i = row * k + j goes to owner(expert[i])
//   slots grouped by owner -> ExchangeCounts, Dispatch (int8 row of ActQuant(n), scale, expert)
//   RunExperts over the rows received -> Combine: results back, in the order sent
//   expert_out[slot] = result -> CombineExperts (top-k order) + the shared expert (local)
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/bf16.h"
#include "base/status_macros.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/moe_ffn.h"
#include "runtime/engine/cpu_engine.h"

namespace bitserve {
namespace {

template <typename T>
T* Sized(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

}  // namespace

absl::Status CpuEngine::ExpertParallelMoe(int layer, const float* n, int64_t m, float* out) {
  const MoeWeights& w = weights_.layers[layer].moe;
  const int64_t h = moe_shape_.hidden;
  const int k = moe_shape_.top_k;
  ExpertExchange& exchange = *expert_exchange_;
  const int ranks = exchange.group_size();
  MoeScratch& s = ffn_scratch_;
  ExpertParallelScratch& x = ep_;

  cpu::RouteTokens(w, moe_shape_, n, m, s);
  int8_t* nq = Sized(s.nq, m * h);
  float* n_scales = Sized(s.n_scales, m);
  cpu::ActQuantPerToken(n, m, h, nq, n_scales);

  // The slots grouped by the rank owning their expert (a counting sort, stable within a rank).
  x.send_counts.assign(ranks, 0);
  for (int64_t i = 0; i < m * k; ++i) ++x.send_counts[expert_owner_[s.experts[i]]];
  std::vector<int64_t> next(ranks + 1, 0);
  for (int p = 0; p < ranks; ++p) next[p + 1] = next[p] + x.send_counts[p];
  int32_t* slots = Sized(x.send_slots, m * k);
  int8_t* values = Sized(x.send_values, m * k * h);
  float* scales = Sized(x.send_scales, m * k);
  int32_t* experts = Sized(x.send_experts, m * k);
  for (int64_t i = 0; i < m * k; ++i) {
    const int64_t j = next[expert_owner_[s.experts[i]]]++;
    slots[j] = static_cast<int32_t>(i);
    std::copy_n(nq + (i / k) * h, h, values + j * h);
    scales[j] = n_scales[i / k];
    experts[j] = s.experts[i];
  }
  x.recv_counts.assign(ranks, 0);
  RETURN_IF_ERROR(exchange.ExchangeCounts(x.send_counts, x.recv_counts));
  int64_t received = 0;
  for (int64_t c : x.recv_counts) received += c;
  RETURN_IF_ERROR(exchange.Dispatch(h, values, scales, experts, Sized(x.recv_values, received * h),
                                    Sized(x.recv_scales, received),
                                    Sized(x.recv_experts, received)));

  // This rank's experts over every row sent here, all origins at once.
  int64_t* load =
      expert_rows_.data() + int64_t{layer - stage_.layer_begin} * moe_shape_.num_experts;
  for (int64_t j = 0; j < received; ++j) {
    const int32_t e = x.recv_experts[j];
    if (e < 0 || e >= moe_shape_.num_experts || expert_owner_[e] != exchange.rank()) {
      return absl::InternalError(absl::StrCat("expert-parallel rank ", exchange.rank(),
                                              " received a row for expert ", e,
                                              ", which it does not own"));
    }
    ++load[e];
  }
  float* results = Sized(x.results, received * h);
  cpu::RunExperts(w, moe_shape_, x.recv_values.data(), x.recv_scales.data(), x.recv_experts.data(),
                  received, results, s);
  float* back = Sized(x.back, m * k * h);
  if (exchange.result_dtype() == ExpertResultDtype::kF32) {
    RETURN_IF_ERROR(exchange.Combine(h, results, back));
  } else {
    uint16_t* results_bf16 = Sized(x.results_bf16, received * h);
    uint16_t* back_bf16 = Sized(x.back_bf16, m * k * h);
    for (int64_t i = 0; i < received * h; ++i) results_bf16[i] = FloatToBf16(results[i]);
    RETURN_IF_ERROR(exchange.Combine(h, results_bf16, back_bf16));
    for (int64_t i = 0; i < m * k * h; ++i) back[i] = Bf16ToFloat(back_bf16[i]);
  }

  // Results back in their slots, then the weighted sum in top-k order.
  float* expert_out = Sized(s.expert_out, m * k * h);
  for (int64_t j = 0; j < m * k; ++j) {
    std::copy_n(back + j * h, h, expert_out + int64_t{slots[j]} * h);
  }
  cpu::CombineExperts(s.weights.data(), expert_out, m, k, h, out);
  cpu::AddSharedExpert(w, moe_shape_, n, nq, n_scales, m, out, s);
  return absl::OkStatus();
}

}  // namespace bitserve
