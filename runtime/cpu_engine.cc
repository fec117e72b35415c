#include "runtime/cpu_engine.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/ternary_matmul.h"
#include "kernels/status_macros.h"

namespace bitserve {
namespace {

int64_t MaxSeqLen(const ModelWeights& w, const EngineOptions& options) {
  return options.max_seq_len > 0 ? options.max_seq_len : w.config.max_position_embeddings;
}

void Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
}

// y[m, out] = ternary(m x in) with the activations quantized per token first.
void QuantizedLinear(const float* x, int64_t m, const TernaryMatrix& w, std::vector<int8_t>& xq,
                     std::vector<float>& scales, float* y) {
  cpu::ActQuantPerToken(x, m, w.cols, xq.data(), scales.data());
  cpu::TernaryMatmul(xq.data(), scales.data(), m, w.values.data(), w.rows, w.cols, w.scale, y);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuEngine>> CpuEngine::Load(const std::filesystem::path& model_dir,
                                                           const EngineOptions& options) {
  if (options.max_sequences < 1) return absl::InvalidArgumentError("max_sequences must be >= 1");
  if (options.max_seq_len < 0) return absl::InvalidArgumentError("max_seq_len must be >= 0");
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(model_dir));
  return std::make_unique<CpuEngine>(std::move(weights), options);
}

CpuEngine::CpuEngine(ModelWeights weights, const EngineOptions& options)
    : weights_(std::move(weights)),
      kv_(weights_.config, options.max_sequences, MaxSeqLen(weights_, options)),
      inv_freq_(cpu::RopeInverseFrequencies(weights_.config.head_dim, weights_.config.rope_theta)),
      trace_(options.trace) {}

absl::Status CpuEngine::Validate(std::span<const SequenceChunk> chunks) const {
  std::set<int> slots;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    if (chunk.slot < 0 || chunk.slot >= max_sequences()) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", chunk.slot, " outside [0, ", max_sequences(), ")"));
    }
    if (!slots.insert(chunk.slot).second) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", chunk.slot, " appears twice in one batch"));
    }
    if (chunk.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("chunk ", c, " has no tokens"));
    for (int32_t id : chunk.tokens) {
      if (id < 0 || id >= config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                                       config().vocab_size, ")"));
      }
    }
    const int64_t end = length(chunk.slot) + static_cast<int64_t>(chunk.tokens.size());
    if (end > max_seq_len()) {
      return absl::OutOfRangeError(absl::StrCat("sequence would reach ", end,
                                                " tokens; the limit is ", max_seq_len()));
    }
  }
  return absl::OkStatus();
}

absl::Status CpuEngine::Forward(std::span<const SequenceChunk> chunks, std::vector<float>* logits) {
  RETURN_IF_ERROR(Validate(chunks));
  for (const SequenceChunk& chunk : chunks) RETURN_IF_ERROR(kv_.Reserve(chunk.slot, chunk.tokens.size()));

  const ModelConfig& c = config();
  const int64_t h = c.hidden_size, inter = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
  int64_t m = 0;
  for (const SequenceChunk& chunk : chunks) m += chunk.tokens.size();
  const int64_t widest = std::max({h, inter, qd});
  Grow(x_, m * h);
  Grow(a_, m * widest);
  Grow(q_, m * qd);
  Grow(k_, m * kvd);
  Grow(v_, m * kvd);
  Grow(o_, m * widest);
  Grow(g_, m * inter);
  Grow(u_, m * inter);
  if (static_cast<int64_t>(aq_.size()) < m * widest) aq_.resize(m * widest);
  Grow(scales_, m);

  std::vector<int32_t> ids;
  positions_.clear();
  for (const SequenceChunk& chunk : chunks) {
    for (size_t i = 0; i < chunk.tokens.size(); ++i) {
      ids.push_back(chunk.tokens[i]);
      positions_.push_back(static_cast<int32_t>(length(chunk.slot) + i));
    }
  }
  cpu::Bf16GatherRows(weights_.embedding.data(), h, ids.data(), m, x_.data());

  const float eps = static_cast<float>(c.rms_norm_eps);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // Attention block: q, k and v share one quantization of the normed input.
    cpu::RmsNorm(x_.data(), w.input_norm.data(), m, h, eps, a_.data());
    if (trace_) trace_("qkv_in", l, a_.data(), m, h);
    cpu::ActQuantPerToken(a_.data(), m, h, aq_.data(), scales_.data());
    cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.q.values.data(), qd, h, w.q.scale, q_.data());
    cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.k.values.data(), kvd, h, w.k.scale, k_.data());
    cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.v.values.data(), kvd, h, w.v.scale, v_.data());
    cpu::RopeNeox(q_.data(), m, c.num_attention_heads, c.head_dim, positions_.data(), inv_freq_.data());
    cpu::RopeNeox(k_.data(), m, c.num_key_value_heads, c.head_dim, positions_.data(), inv_freq_.data());
    Attention(l, chunks);
    cpu::RmsNorm(o_.data(), w.attn_sub_norm.data(), m, qd, eps, o_.data());
    if (trace_) trace_("o_in", l, o_.data(), m, qd);
    QuantizedLinear(o_.data(), m, w.o, aq_, scales_, a_.data());
    cpu::AddInPlace(x_.data(), a_.data(), m * h);

    // Feed-forward block: gate and up share one quantization.
    cpu::RmsNorm(x_.data(), w.post_attention_norm.data(), m, h, eps, a_.data());
    if (trace_) trace_("gate_up_in", l, a_.data(), m, h);
    cpu::ActQuantPerToken(a_.data(), m, h, aq_.data(), scales_.data());
    cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.gate.values.data(), inter, h, w.gate.scale, g_.data());
    cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.up.values.data(), inter, h, w.up.scale, u_.data());
    cpu::Relu2Mul(g_.data(), u_.data(), m * inter, g_.data());
    cpu::RmsNorm(g_.data(), w.ffn_sub_norm.data(), m, inter, eps, g_.data());
    if (trace_) trace_("down_in", l, g_.data(), m, inter);
    QuantizedLinear(g_.data(), m, w.down, aq_, scales_, a_.data());
    cpu::AddInPlace(x_.data(), a_.data(), m * h);
  }
  for (const SequenceChunk& chunk : chunks) kv_.Advance(chunk.slot, chunk.tokens.size());

  // Final norm and LM head, only for the rows that want logits.
  int64_t rows = 0, row0 = 0;
  Grow(logits_in_, m * h);
  for (const SequenceChunk& chunk : chunks) {
    const int64_t n = chunk.tokens.size();
    const int64_t first = chunk.all_logits ? 0 : n - 1;
    for (int64_t i = first; i < n; ++i, ++rows) {
      std::copy_n(x_.data() + (row0 + i) * h, h, logits_in_.data() + rows * h);
    }
    row0 += n;
  }
  cpu::RmsNorm(logits_in_.data(), weights_.final_norm.data(), rows, h, eps, logits_in_.data());
  logits->resize(rows * c.vocab_size);
  cpu::Bf16Matmul(logits_in_.data(), rows, weights_.lm_head_data(), c.vocab_size, h, logits->data());
  return absl::OkStatus();
}

void CpuEngine::Attention(int layer, std::span<const SequenceChunk> chunks) {
  const ModelConfig& c = config();
  const int64_t qd = c.q_dim(), kvd = c.kv_dim();
  const cpu::AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                                  static_cast<float>(1.0 / std::sqrt(double{1.0} * c.head_dim))};
  int64_t row = 0;
  for (const SequenceChunk& chunk : chunks) {
    const int64_t n = chunk.tokens.size();
    const int64_t start = length(chunk.slot);
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(k_.data() + (row + i) * kvd, kvd, kv_.KeyRow(layer, chunk.slot, start + i));
      std::copy_n(v_.data() + (row + i) * kvd, kvd, kv_.ValueRow(layer, chunk.slot, start + i));
    }
    cpu::AttentionCausal(q_.data() + row * qd, n, start, kv_.Keys(layer, chunk.slot),
                         kv_.Values(layer, chunk.slot), kvd, shape, o_.data() + row * qd);
    row += n;
  }
}

}  // namespace bitserve
