#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/random_fill.cuh"
#include "runtime/engine/cuda_model.cuh"
#include "runtime/engine/decoder_layer.h"

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

absl::StatusOr<CudaLayerWeights> UploadLayer(LayerWeights& w, const ModelConfig& config,
                                             std::span<const int32_t> expert_ids,
                                             int64_t* ternary_bytes, int64_t* norm_bytes,
                                             int64_t* expert_bytes) {
  CudaLayerWeights l;
  l.q_scale = cuda::FoldWeightScale(w.q.scale);
  l.k_scale = cuda::FoldWeightScale(w.k.scale);
  l.v_scale = cuda::FoldWeightScale(w.v.scale);
  ASSIGN_OR_RETURN(l.qkv, UploadStacked({&w.q, &w.k, &w.v}));
  ASSIGN_OR_RETURN(l.o, UploadStacked({&w.o}));
  for (const cuda::DeviceTernaryMatrix* t : {&l.qkv, &l.o}) *ternary_bytes += t->view().bytes();
  if (config.is_moe()) {
    auto moe = [&]() -> absl::StatusOr<cuda::DeviceMoeWeights> {
      return cuda::DeviceMoeWeights::Upload(w.moe, LayerMoeShape(config), expert_ids);
    };
    ASSIGN_OR_RETURN(cuda::DeviceMoeWeights device, moe());
    *ternary_bytes += device.ternary_bytes();
    *expert_bytes += device.expert_bytes();
    *norm_bytes += device.float_bytes();
    l.moe.emplace(std::move(device));
  } else {
    l.gate_scale = cuda::FoldWeightScale(w.ffn.gate.scale);
    l.up_scale = cuda::FoldWeightScale(w.ffn.up.scale);
    ASSIGN_OR_RETURN(l.gate_up, UploadStacked({&w.ffn.gate, &w.ffn.up}));
    ASSIGN_OR_RETURN(l.down, UploadStacked({&w.ffn.down}));
    for (const cuda::DeviceTernaryMatrix* t : {&l.gate_up, &l.down})
      *ternary_bytes += t->view().bytes();
  }
  ASSIGN_OR_RETURN(l.input_norm, UploadFloats(w.input_norm));
  ASSIGN_OR_RETURN(l.attn_sub_norm, UploadFloats(w.attn_sub_norm));
  ASSIGN_OR_RETURN(l.post_attention_norm, UploadFloats(w.post_attention_norm));
  if (!config.is_moe()) {
    ASSIGN_OR_RETURN(l.ffn_sub_norm, UploadFloats(w.ffn.sub_norm));
  }
  *norm_bytes += 4 * static_cast<int64_t>(w.input_norm.size() + w.attn_sub_norm.size() +
                                          w.post_attention_norm.size() + w.ffn.sub_norm.size());
  return l;
}

}  // namespace

absl::StatusOr<CudaModelWeights> MakeDummyCudaModelWeights(const ModelConfig& c,
                                                           const PipelineStage& stage,
                                                           uint64_t seed, int held_experts) {
  RETURN_IF_ERROR(c.Validate());
  CudaModelWeights m;
  m.config = c;
  m.stage = stage;
  m.stage.layer_end = stage.end(c.num_hidden_layers);
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  const auto scale = [](int64_t in) {
    return cuda::TernaryOutputScale{cuda::TernaryOutputScale::Mode::kMultiply,
                                    1.0f / std::sqrt(0.5625f * static_cast<float>(in))};
  };
  const auto floats = [&](int64_t n, float mean, float sd,
                          uint64_t s) -> absl::StatusOr<cuda::DeviceBuffer<float>> {
    ASSIGN_OR_RETURN(auto b, cuda::DeviceBuffer<float>::Create(n));
    RETURN_IF_ERROR(cuda::FillRandomFloat(b.get(), n, mean, sd, s, nullptr));
    m.norm_bytes += 4 * n;
    return b;
  };
  const auto bf16 = [&](int64_t n, uint64_t s) -> absl::StatusOr<cuda::DeviceBuffer<uint16_t>> {
    ASSIGN_OR_RETURN(auto b, cuda::DeviceBuffer<uint16_t>::Create(n));
    RETURN_IF_ERROR(cuda::FillRandomBf16(b.get(), n, 0.0f, 3.0f / std::sqrt(static_cast<float>(h)),
                                         s, nullptr));
    return b;
  };
  const int64_t table = int64_t{c.vocab_size} * h;
  if (m.stage.first() || (m.stage.last() && c.tie_word_embeddings)) {
    ASSIGN_OR_RETURN(m.embedding, bf16(table, seed ^ 0x100));
  }
  if (m.stage.last()) {
    if (!c.tie_word_embeddings) {
      ASSIGN_OR_RETURN(m.lm_head, bf16(table, seed ^ 0x200));
    }
    ASSIGN_OR_RETURN(m.final_norm, floats(h, 1.0f, 0.1f, seed ^ 0x300));
  }
  for (int layer = m.stage.layer_begin; layer < m.stage.layer_end; ++layer) {
    const uint64_t ls = seed ^ (static_cast<uint64_t>(layer + 1) << 32);
    CudaLayerWeights l;
    l.q_scale = l.k_scale = l.v_scale = scale(h);
    ASSIGN_OR_RETURN(l.qkv, cuda::DeviceTernaryMatrix::Random(qd + 2 * kvd, h, {}, ls ^ 1));
    ASSIGN_OR_RETURN(l.o, cuda::DeviceTernaryMatrix::Random(h, qd, scale(qd), ls ^ 2));
    m.ternary_bytes += l.qkv.view().bytes() + l.o.view().bytes();
    if (c.is_moe()) {
      auto moe = [&]() -> absl::StatusOr<cuda::DeviceMoeWeights> {
        return cuda::DeviceMoeWeights::Random(LayerMoeShape(c), c.moe_intermediate_size,
                                              c.shared_expert_intermediate_size, ls ^ 3,
                                              held_experts);
      };
      ASSIGN_OR_RETURN(cuda::DeviceMoeWeights device, moe());
      m.ternary_bytes += device.ternary_bytes();
      m.expert_bytes += device.expert_bytes();
      m.norm_bytes += device.float_bytes();
      l.moe.emplace(std::move(device));
    } else {
      l.gate_scale = l.up_scale = scale(h);
      ASSIGN_OR_RETURN(l.gate_up, cuda::DeviceTernaryMatrix::Random(2 * inter, h, {}, ls ^ 4));
      ASSIGN_OR_RETURN(l.down, cuda::DeviceTernaryMatrix::Random(h, inter, scale(inter), ls ^ 5));
      m.ternary_bytes += l.gate_up.view().bytes() + l.down.view().bytes();
      ASSIGN_OR_RETURN(l.ffn_sub_norm, floats(inter, 1.0f, 0.1f, ls ^ 6));
    }
    ASSIGN_OR_RETURN(l.input_norm, floats(h, 1.0f, 0.1f, ls ^ 7));
    ASSIGN_OR_RETURN(l.attn_sub_norm, floats(qd, 1.0f, 0.1f, ls ^ 8));
    ASSIGN_OR_RETURN(l.post_attention_norm, floats(h, 1.0f, 0.1f, ls ^ 9));
    m.layers.push_back(std::move(l));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return m;
}

absl::StatusOr<CudaModelWeights> LoadCudaModelWeights(const std::filesystem::path& dir,
                                                      const PipelineStage& stage,
                                                      std::span<const int32_t> expert_ids) {
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
    ASSIGN_OR_RETURN(std::vector<LayerWeights> layers, reader.Layers(begin, end, expert_ids));
    for (LayerWeights& w : layers) {
      ASSIGN_OR_RETURN(CudaLayerWeights l, UploadLayer(w, m.config, expert_ids, &m.ternary_bytes,
                                                       &m.norm_bytes, &m.expert_bytes));
      m.layers.push_back(std::move(l));
      w = LayerWeights();
    }
  }
  return m;
}

}  // namespace bitserve
