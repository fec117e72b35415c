#include <algorithm>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/parallel.h"
#include "runtime/engine/cuda_model.cuh"

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
  // Initialized from a lambda: nvcc warns (#2810-D) on assigning to an absl::StatusOr.
  auto pack = [&]() -> absl::StatusOr<cuda::PackedTernaryMatrix> {
    if (parts.size() == 1) {
      TernaryMatrix* p = *parts.begin();
      return cuda::PackTernaryMatrix(p->values.data(), p->rows, p->cols, p->scale);
    }
    std::vector<int8_t> values;
    values.reserve(rows * cols);
    for (const TernaryMatrix* p : parts)
      values.insert(values.end(), p->values.begin(), p->values.end());
    return cuda::PackTernaryMatrix(values.data(), rows, cols, cpu::WeightScale{1.0f, false});
  };
  ASSIGN_OR_RETURN(cuda::PackedTernaryMatrix packed, pack());
  for (TernaryMatrix* p : parts) std::vector<int8_t>().swap(p->values);
  return cuda::DeviceTernaryMatrix::Upload(packed);
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

absl::StatusOr<CudaLayerWeights> UploadLayer(LayerWeights& w, int64_t* ternary_bytes,
                                             int64_t* norm_bytes) {
  CudaLayerWeights l;
  l.q_scale = cuda::FoldWeightScale(w.q.scale);
  l.k_scale = cuda::FoldWeightScale(w.k.scale);
  l.v_scale = cuda::FoldWeightScale(w.v.scale);
  l.gate_scale = cuda::FoldWeightScale(w.ffn.gate.scale);
  l.up_scale = cuda::FoldWeightScale(w.ffn.up.scale);
  ASSIGN_OR_RETURN(l.qkv, UploadStacked({&w.q, &w.k, &w.v}));
  ASSIGN_OR_RETURN(l.o, UploadStacked({&w.o}));
  ASSIGN_OR_RETURN(l.gate_up, UploadStacked({&w.ffn.gate, &w.ffn.up}));
  ASSIGN_OR_RETURN(l.down, UploadStacked({&w.ffn.down}));
  for (const cuda::DeviceTernaryMatrix* t : {&l.qkv, &l.o, &l.gate_up, &l.down})
    *ternary_bytes += t->view().bytes();
  ASSIGN_OR_RETURN(l.input_norm, UploadFloats(w.input_norm));
  ASSIGN_OR_RETURN(l.attn_sub_norm, UploadFloats(w.attn_sub_norm));
  ASSIGN_OR_RETURN(l.post_attention_norm, UploadFloats(w.post_attention_norm));
  ASSIGN_OR_RETURN(l.ffn_sub_norm, UploadFloats(w.ffn.sub_norm));
  *norm_bytes += 4 * static_cast<int64_t>(w.input_norm.size() + w.attn_sub_norm.size() +
                                          w.post_attention_norm.size() + w.ffn.sub_norm.size());
  return l;
}

}  // namespace

absl::StatusOr<CudaModelWeights> LoadCudaModelWeights(const std::filesystem::path& dir,
                                                      const PipelineStage& stage) {
  ASSIGN_OR_RETURN(const CheckpointReader reader, CheckpointReader::Open(dir));
  // What the stage uses outside the layers first (embedding, final norm, LM head).
  ASSIGN_OR_RETURN(ModelWeights ends, reader.StageEnds(stage));
  CudaModelWeights m;
  m.config = ends.config;
  m.stage = stage;
  m.stage.layer_end = stage.end(ends.config.num_hidden_layers);
  if (!ends.embedding.empty()) {
    ASSIGN_OR_RETURN(m.embedding, UploadBf16(ends.embedding));
  }
  if (!ends.lm_head.empty()) {
    ASSIGN_OR_RETURN(m.lm_head, UploadBf16(ends.lm_head));
  }
  if (!ends.final_norm.empty()) {
    ASSIGN_OR_RETURN(m.final_norm, UploadFloats(ends.final_norm));
    m.norm_bytes += 4 * static_cast<int64_t>(ends.final_norm.size());
  }
  ends = ModelWeights();
  // Then the layers, a few at a time: decoded on every CPU thread, packed (PackTernaryMatrix is
  // parallel too), uploaded and released, so the host holds at most `chunk` layers' int8 values.
  const int chunk = std::clamp(cpu::NumThreads(), 1, 8);
  for (int begin = m.stage.layer_begin; begin < m.stage.layer_end; begin += chunk) {
    const int end = std::min(begin + chunk, m.stage.layer_end);
    ASSIGN_OR_RETURN(std::vector<LayerWeights> layers, reader.Layers(begin, end));
    for (LayerWeights& w : layers) {
      ASSIGN_OR_RETURN(CudaLayerWeights l, UploadLayer(w, &m.ternary_bytes, &m.norm_bytes));
      m.layers.push_back(std::move(l));
      w = LayerWeights();
    }
  }
  return m;
}

}  // namespace bitserve
