// The MoE block of an expert-parallel CPU rank (EngineOptions::expert_exchange): the pieces of
// cpu::MoeFeedForward (kernels/cpu/moe_ffn.h) with the expert products moved to the ranks that
// own the experts. Every product is per row and the combine runs here in top-k order, so the
// result equals MoeFeedForward's bit for bit whenever results come back as fp32.
//
//   route (router, softmax top-k)  ->  slot i = row * k + j goes to owner(expert[i])
//   Dispatch: rows out (int8 row of ActQuant(n), fp32 scale, expert id), rows in
//   RunExperts over the rows in  ->  Combine: results back, in the order sent
//   expert_out[slot] = result  ->  CombineExperts (top-k order) + shared expert (local)
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/moe_ffn.h"
#include "runtime/engine/cpu_engine.h"

namespace bitserve {

absl::Status CpuEngine::ExpertParallelMoe(int layer, const float* n, int64_t m, float* out) {
  const MoeWeights& w = weights_.layers[layer].moe;
  const int64_t h = moe_shape_.hidden;
  const int k = moe_shape_.top_k;
  const int ranks = expert_exchange_->group_size();
  MoeScratch& s = ffn_scratch_;

  cpu::RouteTokens(w, moe_shape_, n, m, s);
  s.nq.resize(std::max<size_t>(s.nq.size(), m * h));
  s.n_scales.resize(std::max<int64_t>(static_cast<int64_t>(s.n_scales.size()), m));
  cpu::ActQuantPerToken(n, m, h, s.nq.data(), s.n_scales.data());

  rows_out_.resize(ranks);
  slots_out_.resize(ranks);
  for (int p = 0; p < ranks; ++p) {
    rows_out_[p].clear();
    slots_out_[p].clear();
  }
  for (int64_t i = 0; i < m * k; ++i) {
    const int32_t expert = s.experts[i];
    const int p = expert_owner_[expert];
    const int8_t* row = s.nq.data() + (i / k) * h;
    rows_out_[p].values.insert(rows_out_[p].values.end(), row, row + h);
    rows_out_[p].scales.push_back(s.n_scales[i / k]);
    rows_out_[p].experts.push_back(expert);
    slots_out_[p].push_back(static_cast<int32_t>(i));
  }
  RETURN_IF_ERROR(expert_exchange_->Dispatch(h, rows_out_, &rows_in_));

  // This rank's experts over every row sent here, all origins at once.
  received_.clear();
  for (const ExpertRows& r : rows_in_) {
    received_.values.insert(received_.values.end(), r.values.begin(), r.values.end());
    received_.scales.insert(received_.scales.end(), r.scales.begin(), r.scales.end());
    received_.experts.insert(received_.experts.end(), r.experts.begin(), r.experts.end());
  }
  const int64_t total = received_.size();
  int64_t* load =
      expert_rows_.data() + int64_t{layer - stage_.layer_begin} * moe_shape_.num_experts;
  for (int32_t e : received_.experts) {
    if (e < 0 || e >= moe_shape_.num_experts || expert_owner_[e] != expert_exchange_->rank()) {
      return absl::InternalError(absl::StrCat("expert-parallel rank ", expert_exchange_->rank(),
                                              " received a row for expert ", e,
                                              ", which it does not own"));
    }
    ++load[e];
  }
  s.expert_out.resize(std::max<size_t>(s.expert_out.size(), std::max<int64_t>(total, m * k) * h));
  cpu::RunExperts(w, moe_shape_, received_.values.data(), received_.scales.data(),
                  received_.experts.data(), total, s.expert_out.data(), s);
  results_out_.resize(ranks);
  int64_t offset = 0;
  for (int p = 0; p < ranks; ++p) {
    const int64_t rows = rows_in_[p].size();
    results_out_[p].assign(s.expert_out.begin() + offset * h,
                           s.expert_out.begin() + (offset + rows) * h);
    offset += rows;
  }
  RETURN_IF_ERROR(expert_exchange_->Combine(h, results_out_, &results_in_));

  // Results back in their slots, then the weighted sum in top-k order.
  for (int p = 0; p < ranks; ++p) {
    for (size_t j = 0; j < slots_out_[p].size(); ++j) {
      std::copy_n(results_in_[p].data() + j * h, h,
                  s.expert_out.data() + int64_t{slots_out_[p][j]} * h);
    }
  }
  cpu::CombineExperts(s.weights.data(), s.expert_out.data(), m, k, h, out);
  cpu::AddSharedExpert(w, moe_shape_, n, s.nq.data(), s.n_scales.data(), m, out, s);
  return absl::OkStatus();
}

}  // namespace bitserve
