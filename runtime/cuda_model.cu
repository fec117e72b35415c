#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/cuda_model.cuh"

namespace bitserve {
namespace {

// Rows of `parts` stacked into one packed matrix. A single part keeps its scale in the matrix (the
// float epilogue applies it); a stack leaves the scale at 1 (its product is read as int32 sums).
absl::StatusOr<cuda::DeviceTernaryMatrix> UploadStacked(
    std::initializer_list<TernaryMatrix*> parts) {
  const int64_t cols = (*parts.begin())->cols;
  int64_t rows = 0;
  for (const TernaryMatrix* p : parts) {
    if (p->cols != cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("matrices to stack have ", p->cols, " and ", cols, " inputs"));
    }
    rows += p->rows;
  }
  absl::StatusOr<cuda::PackedTernaryMatrix> packed;
  if (parts.size() == 1) {
    TernaryMatrix* p = *parts.begin();
    packed = cuda::PackTernaryMatrix(p->values.data(), p->rows, p->cols, p->scale);
  } else {
    std::vector<int8_t> values;
    values.reserve(rows * cols);
    for (const TernaryMatrix* p : parts)
      values.insert(values.end(), p->values.begin(), p->values.end());
    packed = cuda::PackTernaryMatrix(values.data(), rows, cols, cpu::WeightScale{1.0f, false});
  }
  if (!packed.ok()) return packed.status();
  for (TernaryMatrix* p : parts) std::vector<int8_t>().swap(p->values);
  return cuda::DeviceTernaryMatrix::Upload(*packed);
}

absl::StatusOr<cuda::DeviceBuffer<float>> UploadFloats(const std::vector<float>& v) {
  ASSIGN_OR_RETURN(auto buffer, cuda::DeviceBuffer<float>::Create(static_cast<int64_t>(v.size())));
  RETURN_IF_ERROR(buffer.CopyFromHost(v.data(), static_cast<int64_t>(v.size())));
  return buffer;
}

absl::StatusOr<cuda::DeviceBuffer<uint16_t>> UploadBf16(const std::vector<uint16_t>& v) {
  ASSIGN_OR_RETURN(auto buffer,
                   cuda::DeviceBuffer<uint16_t>::Create(static_cast<int64_t>(v.size())));
  RETURN_IF_ERROR(buffer.CopyFromHost(v.data(), static_cast<int64_t>(v.size())));
  return buffer;
}

}  // namespace

absl::StatusOr<CudaModelWeights> UploadModelWeights(ModelWeights weights, const PipelineStage& stage) {
  CudaModelWeights m;
  m.config = weights.config;
  m.stage = stage;
  m.stage.layer_end = stage.end(weights.config.num_hidden_layers);
  for (int index = m.stage.layer_begin; index < m.stage.layer_end; ++index) {
    LayerWeights& w = weights.layers[index];
    CudaLayerWeights l;
    l.q_scale = cuda::FoldWeightScale(w.q.scale);
    l.k_scale = cuda::FoldWeightScale(w.k.scale);
    l.v_scale = cuda::FoldWeightScale(w.v.scale);
    l.gate_scale = cuda::FoldWeightScale(w.gate.scale);
    l.up_scale = cuda::FoldWeightScale(w.up.scale);
    ASSIGN_OR_RETURN(l.qkv, UploadStacked({&w.q, &w.k, &w.v}));
    ASSIGN_OR_RETURN(l.o, UploadStacked({&w.o}));
    ASSIGN_OR_RETURN(l.gate_up, UploadStacked({&w.gate, &w.up}));
    ASSIGN_OR_RETURN(l.down, UploadStacked({&w.down}));
    for (const cuda::DeviceTernaryMatrix* t : {&l.qkv, &l.o, &l.gate_up, &l.down}) {
      m.ternary_bytes += t->view().bytes();
    }
    ASSIGN_OR_RETURN(l.input_norm, UploadFloats(w.input_norm));
    ASSIGN_OR_RETURN(l.attn_sub_norm, UploadFloats(w.attn_sub_norm));
    ASSIGN_OR_RETURN(l.post_attention_norm, UploadFloats(w.post_attention_norm));
    ASSIGN_OR_RETURN(l.ffn_sub_norm, UploadFloats(w.ffn_sub_norm));
    m.norm_bytes += 4 * static_cast<int64_t>(w.input_norm.size() + w.attn_sub_norm.size() +
                                             w.post_attention_norm.size() + w.ffn_sub_norm.size());
    m.layers.push_back(std::move(l));
  }
  const bool tied = weights.lm_head.empty();
  if (stage.first() || (stage.last() && tied)) {
    ASSIGN_OR_RETURN(m.embedding, UploadBf16(weights.embedding));
  }
  if (stage.last()) {
    if (!tied) {
      ASSIGN_OR_RETURN(m.lm_head, UploadBf16(weights.lm_head));
    }
    ASSIGN_OR_RETURN(m.final_norm, UploadFloats(weights.final_norm));
    m.norm_bytes += 4 * static_cast<int64_t>(weights.final_norm.size());
  }
  return m;
}

}  // namespace bitserve
