#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/random_fill.cuh"
#include "kernels/cuda/moe/moe_dispatch.cuh"
#include "kernels/cuda/moe/moe_ffn.cuh"
#include "kernels/cuda/moe/moe_routing.cuh"
#include "kernels/cuda/norm/gated_ffn.cuh"
#include "kernels/cuda/ternary/random_ternary.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

template <typename T>
absl::Status Alloc(DeviceBuffer<T>* b, int64_t n) {
  ASSIGN_OR_RETURN(*b, DeviceBuffer<T>::Create(std::max<int64_t>(n, 1)));
  return absl::OkStatus();
}

template <typename T>
absl::Status UploadVector(DeviceBuffer<T>* b, const std::vector<T>& v) {
  RETURN_IF_ERROR(Alloc(b, static_cast<int64_t>(v.size())));
  return b->CopyFromHost(v.data(), static_cast<int64_t>(v.size()));
}

absl::Status CheckMatrix(const TernaryMatrix& m, int64_t rows, int64_t cols, const char* what,
                         int expert) {
  if (m.rows != rows || m.cols != cols || static_cast<int64_t>(m.values.size()) != rows * cols) {
    return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " ", what, " is [", m.rows,
                                                   ", ", m.cols, "], expected [", rows, ", ", cols,
                                                   "]"));
  }
  return absl::OkStatus();
}

// [gate; up] stacked, scale 1: the product is read as int32 sums (the epilogue scales each half).
absl::StatusOr<PackedTernaryMatrix> PackGateUp(FfnWeights& f) {
  std::vector<int8_t> values;
  values.reserve(f.gate.values.size() + f.up.values.size());
  values.insert(values.end(), f.gate.values.begin(), f.gate.values.end());
  values.insert(values.end(), f.up.values.begin(), f.up.values.end());
  std::vector<int8_t>().swap(f.gate.values);
  std::vector<int8_t>().swap(f.up.values);
  return PackTernaryMatrix(values.data(), 2 * f.gate.rows, f.gate.cols,
                           cpu::WeightScale{1.0f, false});
}

absl::StatusOr<PackedTernaryMatrix> PackDown(FfnWeights& f) {
  auto packed = PackTernaryMatrix(f.down.values.data(), f.down.rows, f.down.cols, f.down.scale);
  std::vector<int8_t>().swap(f.down.values);
  return packed;
}

}  // namespace

absl::Status DeviceMoeWeights::WidenRouter(DeviceMoeWeights& d) {
  RETURN_IF_ERROR(Alloc(&d.router_f32_, d.router_.size()));
  return Bf16ToFloat(d.router_.get(), d.router_.size(), d.router_f32_.get(), nullptr);
}

absl::StatusOr<DeviceMoeWeights> DeviceMoeWeights::Upload(MoeWeights& w, const MoeShape& shape,
                                                          std::span<const int32_t> held) {
  const int64_t h = shape.hidden;
  if (shape.num_experts < 1 || static_cast<int>(w.experts.size()) != shape.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("MoE block has ", w.experts.size(),
                                                   " experts, the shape says ", shape.num_experts));
  }
  std::vector<int32_t> ids(held.begin(), held.end());
  if (ids.empty()) {
    for (int e = 0; e < shape.num_experts; ++e) ids.push_back(e);
  }
  for (int32_t e : ids) {
    if (e < 0 || e >= shape.num_experts || !w.holds(e)) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoE block: expert ", e, " is asked for but was not loaded"));
    }
  }
  const int num_experts = static_cast<int>(ids.size());
  const int64_t inter = w.experts[ids[0]].gate.rows;
  if (inter < 4 || inter % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA MoE block needs an expert width that is a multiple of 4, got ", inter));
  }
  if (static_cast<int64_t>(w.router.size()) != shape.num_experts * h) {
    return absl::InvalidArgumentError(
        absl::StrCat("router has ", w.router.size(), " values, expected ", shape.num_experts * h));
  }
  DeviceMoeWeights d;
  std::vector<uint16_t> router = w.router;
  if (w.has_shared()) router.insert(router.end(), w.shared_gate.begin(), w.shared_gate.end());
  RETURN_IF_ERROR(UploadVector(&d.router_, router));
  RETURN_IF_ERROR(WidenRouter(d));

  std::vector<uint32_t> gate_up_words, down_words;
  std::vector<TernaryOutputScale> gate_scales, up_scales, down_scales;
  std::vector<float> sub_norms;
  sub_norms.reserve(num_experts * inter);
  PackedTernaryMatrix gate_up_shape, down_shape;
  for (int i = 0; i < num_experts; ++i) {
    const int e = ids[i];
    FfnWeights& f = w.experts[e];
    RETURN_IF_ERROR(CheckMatrix(f.gate, inter, h, "gate_proj", e));
    RETURN_IF_ERROR(CheckMatrix(f.up, inter, h, "up_proj", e));
    RETURN_IF_ERROR(CheckMatrix(f.down, h, inter, "down_proj", e));
    if (static_cast<int64_t>(f.sub_norm.size()) != inter) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", e, " ffn_sub_norm has ", f.sub_norm.size(), " values"));
    }
    gate_scales.push_back(FoldWeightScale(f.gate.scale));
    up_scales.push_back(FoldWeightScale(f.up.scale));
    ASSIGN_OR_RETURN(PackedTernaryMatrix gu, PackGateUp(f));
    ASSIGN_OR_RETURN(PackedTernaryMatrix dn, PackDown(f));
    down_scales.push_back(dn.scale);
    if (i == 0) {
      gate_up_words.reserve(gu.words.size() * num_experts);
      down_words.reserve(dn.words.size() * num_experts);
    }
    gate_up_words.insert(gate_up_words.end(), gu.words.begin(), gu.words.end());
    down_words.insert(down_words.end(), dn.words.begin(), dn.words.end());
    sub_norms.insert(sub_norms.end(), f.sub_norm.begin(), f.sub_norm.end());
    gu.words.clear();
    dn.words.clear();
    if (i == 0) gate_up_shape = std::move(gu), down_shape = std::move(dn);
  }
  RETURN_IF_ERROR(UploadVector(&d.gate_up_, gate_up_words));
  RETURN_IF_ERROR(UploadVector(&d.down_, down_words));
  RETURN_IF_ERROR(UploadVector(&d.gate_scales_, gate_scales));
  RETURN_IF_ERROR(UploadVector(&d.up_scales_, up_scales));
  RETURN_IF_ERROR(UploadVector(&d.down_scales_, down_scales));
  RETURN_IF_ERROR(UploadVector(&d.sub_norms_, sub_norms));
  d.ternary_bytes_ = 4 * static_cast<int64_t>(gate_up_words.size() + down_words.size());
  d.float_bytes_ =
      4 * static_cast<int64_t>(sub_norms.size()) + 2 * static_cast<int64_t>(router.size());

  MoeFfnWeightsView& v = d.view_;
  v.router = d.router_.get();
  v.router_f32 = d.router_f32_.get();
  v.gate_up.first = PackedMatrixView(d.gate_up_.get(), gate_up_shape.rows, gate_up_shape.cols, {});
  v.gate_up.expert_words = static_cast<int64_t>(gate_up_words.size()) / num_experts;
  v.gate_up.num_experts = num_experts;
  v.down.first =
      PackedMatrixView(d.down_.get(), down_shape.rows, down_shape.cols, down_shape.scale);
  v.down.expert_words = static_cast<int64_t>(down_words.size()) / num_experts;
  v.down.num_experts = num_experts;
  v.down.scales = d.down_scales_.get();
  v.gate_scales = d.gate_scales_.get();
  v.up_scales = d.up_scales_.get();
  v.sub_norms = d.sub_norms_.get();
  v.inter = inter;

  if (w.has_shared()) {
    FfnWeights& f = w.shared;
    const int64_t si = f.gate.rows;
    RETURN_IF_ERROR(CheckMatrix(f.gate, si, h, "shared gate_proj", -1));
    RETURN_IF_ERROR(CheckMatrix(f.up, si, h, "shared up_proj", -1));
    RETURN_IF_ERROR(CheckMatrix(f.down, h, si, "shared down_proj", -1));
    if (si % 4 != 0 || static_cast<int64_t>(f.sub_norm.size()) != si) {
      return absl::InvalidArgumentError(
          absl::StrCat("the shared expert's width ", si,
                       " must be a multiple of 4 with as many sub-norm weights"));
    }
    v.shared_gate_scale = FoldWeightScale(f.gate.scale);
    v.shared_up_scale = FoldWeightScale(f.up.scale);
    ASSIGN_OR_RETURN(PackedTernaryMatrix gu, PackGateUp(f));
    ASSIGN_OR_RETURN(PackedTernaryMatrix dn, PackDown(f));
    ASSIGN_OR_RETURN(d.shared_gate_up_, DeviceTernaryMatrix::Upload(gu));
    ASSIGN_OR_RETURN(d.shared_down_, DeviceTernaryMatrix::Upload(dn));
    RETURN_IF_ERROR(UploadVector(&d.shared_sub_norm_, f.sub_norm));
    v.shared_gate_up = d.shared_gate_up_.view();
    v.shared_down = d.shared_down_.view();
    v.shared_sub_norm = d.shared_sub_norm_.get();
    v.shared_inter = si;
    d.ternary_bytes_ += gu.bytes() + dn.bytes();
    d.float_bytes_ += 4 * si;
  }
  return d;
}

absl::StatusOr<DeviceMoeWeights> DeviceMoeWeights::Random(const MoeShape& shape, int64_t inter,
                                                          int64_t shared_inter, uint64_t seed,
                                                          int held) {
  const int num_experts = held > 0 ? held : shape.num_experts;
  const int64_t h = shape.hidden;
  if (num_experts < 1 || h < 4 || h % 4 != 0 || inter < 4 || inter % 4 != 0 ||
      shared_inter % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("random MoE block: ", num_experts, " experts, hidden ", h, ", width ", inter));
  }
  // The synthetic checkpoints' multiplier: 1 / sqrt(0.5625 * inputs).
  const auto scale = [](int64_t in) {
    return TernaryOutputScale{TernaryOutputScale::Mode::kMultiply,
                              1.0f / std::sqrt(0.5625f * static_cast<float>(in))};
  };
  DeviceMoeWeights d;
  const int64_t router_rows = shape.num_experts + (shared_inter > 0 ? 1 : 0);
  RETURN_IF_ERROR(Alloc(&d.router_, router_rows * h));
  RETURN_IF_ERROR(FillRandomBf16(d.router_.get(), router_rows * h, 0.0f,
                                 1.0f / std::sqrt(static_cast<float>(h)), seed ^ 1, nullptr));
  RETURN_IF_ERROR(WidenRouter(d));
  const int64_t gu_words = PaddedRows(2 * inter) * PaddedInputs(h) / 16;
  const int64_t down_words = PaddedRows(h) * PaddedInputs(inter) / 16;
  RETURN_IF_ERROR(Alloc(&d.gate_up_, gu_words * num_experts));
  RETURN_IF_ERROR(Alloc(&d.down_, down_words * num_experts));
  for (int e = 0; e < num_experts; ++e) {
    const uint64_t es = seed ^ (static_cast<uint64_t>(e + 1) << 20);
    RETURN_IF_ERROR(
        FillRandomPackedTernary(d.gate_up_.get() + e * gu_words, 2 * inter, h, es ^ 2, nullptr));
    RETURN_IF_ERROR(
        FillRandomPackedTernary(d.down_.get() + e * down_words, h, inter, es ^ 3, nullptr));
  }
  RETURN_IF_ERROR(
      UploadVector(&d.gate_scales_, std::vector<TernaryOutputScale>(num_experts, scale(h))));
  RETURN_IF_ERROR(
      UploadVector(&d.up_scales_, std::vector<TernaryOutputScale>(num_experts, scale(h))));
  RETURN_IF_ERROR(
      UploadVector(&d.down_scales_, std::vector<TernaryOutputScale>(num_experts, scale(inter))));
  RETURN_IF_ERROR(Alloc(&d.sub_norms_, num_experts * inter));
  RETURN_IF_ERROR(
      FillRandomFloat(d.sub_norms_.get(), num_experts * inter, 1.0f, 0.1f, seed ^ 4, nullptr));
  d.ternary_bytes_ = 4 * (gu_words + down_words) * num_experts;
  d.float_bytes_ = 4 * num_experts * inter + 2 * router_rows * h;

  MoeFfnWeightsView& v = d.view_;
  v.router = d.router_.get();
  v.router_f32 = d.router_f32_.get();
  v.gate_up.first = PackedMatrixView(d.gate_up_.get(), 2 * inter, h, {});
  v.gate_up.expert_words = gu_words;
  v.gate_up.num_experts = num_experts;
  v.down.first = PackedMatrixView(d.down_.get(), h, inter, scale(inter));
  v.down.expert_words = down_words;
  v.down.num_experts = num_experts;
  v.down.scales = d.down_scales_.get();
  v.gate_scales = d.gate_scales_.get();
  v.up_scales = d.up_scales_.get();
  v.sub_norms = d.sub_norms_.get();
  v.inter = inter;
  if (shared_inter > 0) {
    ASSIGN_OR_RETURN(d.shared_gate_up_,
                     DeviceTernaryMatrix::Random(2 * shared_inter, h, {}, seed ^ 5));
    ASSIGN_OR_RETURN(d.shared_down_,
                     DeviceTernaryMatrix::Random(h, shared_inter, scale(shared_inter), seed ^ 6));
    RETURN_IF_ERROR(Alloc(&d.shared_sub_norm_, shared_inter));
    RETURN_IF_ERROR(
        FillRandomFloat(d.shared_sub_norm_.get(), shared_inter, 1.0f, 0.1f, seed ^ 7, nullptr));
    v.shared_gate_up = d.shared_gate_up_.view();
    v.shared_down = d.shared_down_.view();
    v.shared_gate_scale = v.shared_up_scale = scale(h);
    v.shared_sub_norm = d.shared_sub_norm_.get();
    v.shared_inter = shared_inter;
    d.ternary_bytes_ += v.shared_gate_up.bytes() + v.shared_down.bytes();
    d.float_bytes_ += 4 * shared_inter;
  }
  return d;
}

absl::StatusOr<MoeFfnScratch> MoeFfnScratch::Create(const MoeShape& shape, int64_t inter,
                                                    int64_t shared_inter, int64_t max_tokens) {
  MoeFfnScratch s;
  const int64_t m = std::max<int64_t>(max_tokens, 1);
  const int64_t pairs = m * shape.top_k;
  const int64_t h = shape.hidden;
  s.max_tokens_ = m;
  s.max_pairs_ = pairs;
  s.max_items_ = pairs;  // MaxGroupedItems never exceeds the row count
  s.num_experts_ = shape.num_experts;
  if (m >= kRouterSgemmMinTokens) {
    ASSIGN_OR_RETURN(s.router_sgemm_, RouterSgemm::Create());
  }
  RETURN_IF_ERROR(Alloc(&s.logits_, m * (shape.num_experts + 1)));
  RETURN_IF_ERROR(Alloc(&s.weights_, pairs));
  RETURN_IF_ERROR(Alloc(&s.experts_, pairs));
  RETURN_IF_ERROR(Alloc(&s.expert_rows_, shape.num_experts + 1));
  RETURN_IF_ERROR(Alloc(&s.source_rows_, pairs));
  RETURN_IF_ERROR(Alloc(&s.row_expert_, pairs));
  RETURN_IF_ERROR(Alloc(&s.pair_rows_, pairs));
  RETURN_IF_ERROR(Alloc(&s.num_items_, 1));
  RETURN_IF_ERROR(Alloc(&s.items_, pairs));
  RETURN_IF_ERROR(Alloc(&s.acc_, pairs * 2 * inter));
  RETURN_IF_ERROR(Alloc(&s.act_, pairs * PaddedInputs(inter)));
  RETURN_IF_ERROR(Alloc(&s.act_scales_, pairs));
  RETURN_IF_ERROR(Alloc(&s.act_sums_, pairs));
  RETURN_IF_ERROR(Alloc(&s.y_, pairs * h));
  if (shared_inter > 0) {
    RETURN_IF_ERROR(Alloc(&s.shared_acc_, m * 2 * shared_inter));
    RETURN_IF_ERROR(Alloc(&s.shared_act_, m * PaddedInputs(shared_inter)));
    RETURN_IF_ERROR(Alloc(&s.shared_act_scales_, m));
    RETURN_IF_ERROR(Alloc(&s.shared_act_sums_, m));
    RETURN_IF_ERROR(Alloc(&s.shared_y_, m * h));
  }
  return s;
}

int64_t MoeFfnScratch::bytes() const {
  return logits_.bytes() + weights_.bytes() + experts_.bytes() + expert_rows_.bytes() +
         source_rows_.bytes() + row_expert_.bytes() + pair_rows_.bytes() + num_items_.bytes() +
         items_.bytes() + acc_.bytes() + act_.bytes() + act_scales_.bytes() + act_sums_.bytes() +
         y_.bytes() + shared_acc_.bytes() + shared_act_.bytes() + shared_act_scales_.bytes() +
         shared_act_sums_.bytes() + shared_y_.bytes();
}

namespace {

// Rows per work item and the bound on items of `pairs` grouped rows over num_experts experts.
struct GroupedWork {
  int per_item, max_items;
};
GroupedWork GroupedWorkFor(int64_t pairs, int num_experts) {
  const int per_item = GroupedRowsPerItem(ExpectedRowsPerExpert(pairs, num_experts));
  return {per_item, MaxGroupedItems(pairs, num_experts, per_item)};
}

// Rows of the router's logits: the routed experts, and the shared expert's gate when it has one.
int RouterRows(const MoeFfnWeightsView& w, const MoeShape& shape) {
  return shape.num_experts + (w.shared_inter > 0 ? 1 : 0);
}

}  // namespace

absl::Status MoeFfnScratch::RouterLogits(const MoeFfnWeightsView& w, const MoeShape& shape,
                                         const float* n, int64_t m, cudaStream_t stream) {
  const int router_rows = RouterRows(w, shape);
  if (m >= kRouterSgemmMinTokens && router_sgemm_ != nullptr && w.router_f32 != nullptr) {
    return router_sgemm_->Run(n, m, w.router_f32, router_rows, shape.hidden, logits_.get(), stream);
  }
  return Bf16RowProducts(n, m, w.router, router_rows, shape.hidden, logits_.get(), stream);
}

ExpertGrouping MoeFfnScratch::Grouping() {
  ExpertGrouping g;
  g.expert_rows = expert_rows_.get();
  g.source_rows = source_rows_.get();
  g.row_expert = row_expert_.get();
  g.pair_rows = pair_rows_.get();
  g.items = items_.get();
  g.num_items = num_items_.get();
  return g;
}

absl::Status RouteTokens(const MoeFfnWeightsView& w, const MoeShape& shape, const float* n,
                         int64_t m, MoeFfnScratch& s, cudaStream_t stream) {
  if (m > s.max_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE block: ", m, " tokens, scratch for ", s.max_tokens_));
  }
  if (m == 0) return absl::OkStatus();
  RETURN_IF_ERROR(s.RouterLogits(w, shape, n, m, stream));
  return SoftmaxTopK(s.logits_.get(), RouterRows(w, shape), m, shape.num_experts, shape.top_k,
                     shape.norm_topk_prob, s.experts_.get(), s.weights_.get(), stream);
}

absl::Status GroupedExpertProducts(const MoeFfnWeightsView& w, float eps, int64_t pairs,
                                   const Int8Activations& x, MoeFfnScratch& s,
                                   cudaStream_t stream) {
  const int64_t inter = w.inter;
  const GroupedWork work = GroupedWorkFor(pairs, w.gate_up.num_experts);
  GroupedRows rows{s.items_.get(), s.num_items_.get(), work.max_items, work.per_item,
                   s.source_rows_.get()};
  RETURN_IF_ERROR(GroupedTernaryGemv(w.gate_up, x, rows, nullptr, s.acc_.get(), stream));
  const Int8ActivationsOut act{s.act_.get(), s.act_scales_.get(), s.act_sums_.get(),
                               PaddedInputs(inter)};
  GroupedGateUp grouped{s.row_expert_.get(), s.source_rows_.get(), w.gate_scales, w.up_scales,
                        w.sub_norms};
  RETURN_IF_ERROR(GroupedGateUpRelu2NormQuantize(s.acc_.get(), x.scales, grouped, pairs, inter, eps,
                                                 act, stream));
  rows.source_rows = nullptr;  // the down product reads the grouped rows themselves
  return GroupedTernaryGemv(w.down, Int8Activations(act, pairs, inter), rows, s.y_.get(), nullptr,
                            stream);
}

absl::Status ExpertProducts(const MoeFfnWeightsView& w, float eps, const int32_t* experts,
                            int top_k, const Int8Activations& x, MoeFfnScratch& s,
                            cudaStream_t stream) {
  const int64_t pairs = x.rows * top_k;
  const int num_experts = w.gate_up.num_experts;
  if (pairs > s.max_pairs_ || num_experts > s.num_experts_) {
    return absl::InvalidArgumentError(absl::StrCat("MoE experts: ", pairs, " rows over ",
                                                   num_experts, " experts, scratch for ",
                                                   s.max_pairs_, " over ", s.num_experts_));
  }
  if (pairs == 0) return absl::OkStatus();
  const GroupedWork work = GroupedWorkFor(pairs, num_experts);
  RETURN_IF_ERROR(GroupByExpert(experts, x.rows, top_k, num_experts, work.per_item, work.max_items,
                                s.Grouping(), stream));
  return GroupedExpertProducts(w, eps, pairs, x, s, stream);
}

absl::Status SharedExpertAndCombine(const MoeFfnWeightsView& w, const MoeShape& shape,
                                    const Int8Activations& nq, const float* y,
                                    const int32_t* pair_rows, float* out, MoeFfnScratch& s,
                                    TernaryGemm* gemm, cudaStream_t stream) {
  const int64_t m = nq.rows;
  if (m == 0) return absl::OkStatus();
  const bool shared = w.shared_inter > 0;
  if (shared) {
    const int64_t si = w.shared_inter;
    RETURN_IF_ERROR(TernaryMatmulInt32(gemm, w.shared_gate_up, nq, s.shared_acc_.get(), stream));
    const Int8ActivationsOut shared_act{s.shared_act_.get(), s.shared_act_scales_.get(),
                                        s.shared_act_sums_.get(), PaddedInputs(si)};
    RETURN_IF_ERROR(GateUpRelu2NormQuantize(s.shared_acc_.get(), nq.scales, w.shared_gate_scale,
                                            w.shared_up_scale, m, si, w.shared_sub_norm, shape.eps,
                                            shared_act, nullptr, stream));
    RETURN_IF_ERROR(TernaryMatmul(gemm, w.shared_down, Int8Activations(shared_act, m, si),
                                  s.shared_y_.get(), stream));
  }
  return CombineExperts(y, pair_rows, s.weights_.get(), m, shape.top_k, shape.hidden,
                        shared ? s.logits_.get() + shape.num_experts : nullptr,
                        RouterRows(w, shape), shared ? s.shared_y_.get() : nullptr, out, stream);
}

absl::Status MoeFeedForward(const MoeFfnWeightsView& w, const MoeShape& shape, const float* n,
                            const Int8Activations& nq, float* out, MoeFfnScratch& s,
                            TernaryGemm* gemm, cudaStream_t stream) {
  const int64_t m = nq.rows;
  if (m == 1) {
    // Batch-1 decode: the top-k and the grouping in one launch.
    RETURN_IF_ERROR(s.RouterLogits(w, shape, n, m, stream));
    const GroupedWork work = GroupedWorkFor(shape.top_k, shape.num_experts);
    RETURN_IF_ERROR(SoftmaxTopKGroupOneToken(
        s.logits_.get(), shape.num_experts, shape.top_k, shape.norm_topk_prob, s.experts_.get(),
        s.weights_.get(), work.per_item, work.max_items, s.Grouping(), stream));
    RETURN_IF_ERROR(GroupedExpertProducts(w, shape.eps, shape.top_k, nq, s, stream));
  } else {
    RETURN_IF_ERROR(RouteTokens(w, shape, n, m, s, stream));
    if (m == 0) return absl::OkStatus();
    RETURN_IF_ERROR(ExpertProducts(w, shape.eps, s.experts(), shape.top_k, nq, s, stream));
  }
  return SharedExpertAndCombine(w, shape, nq, s.y(), s.pair_rows(), out, s, gemm, stream);
}

}  // namespace bitserve::cuda
