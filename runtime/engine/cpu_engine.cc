#include "runtime/engine/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cpu/moe_ffn.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/ternary_matmul.h"

namespace bitserve {
namespace {

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
  if (options.load_format == LoadFormat::kDummy) {
    return absl::InvalidArgumentError(
        "--load-format dummy makes random weights on a GPU: use --device cuda (the CPU engine "
        "reads the checkpoint)");
  }
  if (options.block_size < 1) return absl::InvalidArgumentError("block_size must be >= 1");
  if (options.num_kv_blocks < 0) return absl::InvalidArgumentError("num_kv_blocks must be >= 0");
  if (options.max_sequences < 1) return absl::InvalidArgumentError("max_sequences must be >= 1");
  if (options.max_model_len < 0) return absl::InvalidArgumentError("max_model_len must be >= 0");
  if (options.max_batch_tokens < 1)
    return absl::InvalidArgumentError("max_batch_tokens must be >= 1");
  if (options.kv_dtype) RETURN_IF_ERROR(CheckKvDtype("cpu", *options.kv_dtype));
  RETURN_IF_ERROR(CheckKvRotation(options.kv_rotation));
  std::vector<int32_t> experts;
  if (options.expert_exchange != nullptr) {
    ASSIGN_OR_RETURN(const ModelConfig config, LoadModelConfig(model_dir));
    ASSIGN_OR_RETURN(experts, ExpertsOfRank(config, options));
  }
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(model_dir, options.stage, experts));
  if (options.kv_dtype == KvDtype::kInt4 && weights.config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("int4 KV cache needs an even head_dim (two values a byte); the model has ",
                     weights.config.head_dim));
  }
  return std::make_unique<CpuEngine>(std::move(weights), options);
}

namespace {

int64_t ModelLen(const ModelConfig& c, const EngineOptions& options) {
  return options.max_model_len > 0 ? options.max_model_len : c.context_length();
}

// Enough blocks for max_sequences sequences of max_model_len tokens (allocated lazily).
int NumBlocks(const ModelConfig& c, const EngineOptions& options) {
  if (options.num_kv_blocks > 0) return options.num_kv_blocks;
  const int64_t per_seq = (ModelLen(c, options) + options.block_size - 1) / options.block_size;
  return static_cast<int>(std::min<int64_t>(per_seq * options.max_sequences, 1 << 30));
}

}  // namespace

CpuEngine::CpuEngine(ModelWeights weights, const EngineOptions& options)
    : weights_(std::move(weights)),
      stage_(options.stage),
      transfer_(options.pp_transfer),
      kv_(weights_.config, NumBlocks(weights_.config, options), options.block_size,
          options.kv_dtype.value_or(KvDtype::kF32), options.stage.layer_begin,
          options.stage.end(weights_.config.num_hidden_layers) - options.stage.layer_begin),
      kv_rotation_(options.kv_rotation.value_or(
          DefaultKvRotation(options.kv_dtype.value_or(KvDtype::kF32)))),
      lm_head_dtype_(options.lm_head_dtype),
      max_model_len_(ModelLen(weights_.config, options)),
      max_batch_tokens_(options.max_batch_tokens),
      rope_(ModelRopeFrequencies(weights_.config)),
      trace_(options.trace),
      moe_shape_(LayerMoeShape(weights_.config)),
      expert_owner_(options.expert_owner),
      expert_exchange_(options.expert_exchange),
      sampler_(std::make_unique<Sampler>(SamplingParams{.seed = 0}, std::span<const int32_t>{})) {
  stage_.layer_end = stage_.end(weights_.config.num_hidden_layers);
  if (lm_head_dtype_ == LmHeadDtype::kInt8 && stage_.last()) {
    const ModelConfig& c = weights_.config;
    lm_head_int8_.resize(static_cast<size_t>(c.vocab_size) * c.hidden_size);
    lm_head_scales_.resize(c.vocab_size);
    cpu::QuantizeBf16RowsInt8(weights_.lm_head_data(), c.vocab_size, c.hidden_size,
                              lm_head_int8_.data(), c.hidden_size, lm_head_scales_.data());
    // The bf16 copy is not read again, unless it is the embedding table of a first stage.
    weights_.lm_head = {};
    if (!stage_.first()) weights_.embedding = {};
  }
}

absl::Status CpuEngine::Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) {
  if (!stage_.whole_model()) {
    return absl::FailedPreconditionError(
        "Forward needs the whole model; a pipeline stage runs StageStep");
  }
  if (absl::Status s = Validate(entries); !s.ok()) return Refuse(s);
  RETURN_IF_ERROR(Run(entries, {}));
  Logits(entries, logits);
  return absl::OkStatus();
}

absl::Status CpuEngine::Validate(std::span<const BatchEntry> entries) const {
  if (expert_exchange_ != nullptr && entries.empty()) return absl::OkStatus();
  return ValidateBatch(entries, config(), block_size(), num_kv_blocks(), max_model_len_,
                       max_batch_tokens_);
}

absl::Status CpuEngine::Refuse(absl::Status refused) {
  if (expert_exchange_ != nullptr) {
    if (absl::Status s = Run({}, {}); !s.ok()) {
      return absl::Status(refused.code(), absl::StrCat(refused.message(), "; then ", s.message()));
    }
  }
  return refused;
}

void CpuEngine::Logits(std::span<const BatchEntry> entries, std::vector<float>* logits) {
  // Final norm and LM head, only for the rows that want logits.
  const ModelConfig& c = config();
  const int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  int64_t m = 0;
  for (const BatchEntry& entry : entries) m += entry.tokens.size();
  int64_t rows = 0, row0 = 0;
  Grow(logits_in_, m * h);
  for (const BatchEntry& entry : entries) {
    const int64_t n = entry.tokens.size();
    const int64_t first = entry.logits == LogitsWanted::kAll    ? 0
                          : entry.logits == LogitsWanted::kLast ? n - 1
                                                                : n;
    for (int64_t i = first; i < n; ++i, ++rows) {
      std::copy_n(x_.data() + (row0 + i) * h, h, logits_in_.data() + rows * h);
    }
    row0 += n;
  }
  logits->resize(rows * c.vocab_size);
  if (rows == 0) return;
  cpu::RmsNorm(logits_in_.data(), weights_.final_norm.data(), rows, h, eps, logits_in_.data());
  if (lm_head_dtype_ == LmHeadDtype::kInt8) {
    if (static_cast<int64_t>(logits_in_int8_.size()) < rows * h) logits_in_int8_.resize(rows * h);
    Grow(logits_in_scales_, rows);
    cpu::ActQuantPerToken(logits_in_.data(), rows, h, logits_in_int8_.data(),
                          logits_in_scales_.data());
    cpu::Int8MatmulRowScales(logits_in_int8_.data(), logits_in_scales_.data(), rows,
                             lm_head_int8_.data(), c.vocab_size, h, lm_head_scales_.data(),
                             logits->data());
    return;
  }
  cpu::Bf16Matmul(logits_in_.data(), rows, weights_.lm_head_data(), c.vocab_size, h,
                  logits->data());
}

namespace {

absl::Status CheckSamples(std::span<const BatchEntry> entries,
                          std::span<const SampleSpec> samples) {
  size_t sampled = 0;
  for (const BatchEntry& entry : entries) sampled += entry.logits == LogitsWanted::kLast;
  if (sampled != samples.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(samples.size(), " sample specs for ", sampled, " entries that are sampled"));
  }
  for (const SampleSpec& spec : samples) {
    if (spec.params == nullptr) return absl::InvalidArgumentError("a sample spec has no params");
    RETURN_IF_ERROR(spec.params->Validate());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CpuEngine::Sample(std::span<const BatchEntry> entries,
                               std::span<const SampleSpec> samples,
                               std::vector<SampleResult>* results) {
  // Only the sampled rows: entries asking for every row are scored, not sampled.
  std::vector<BatchEntry> last_only(entries.begin(), entries.end());
  for (BatchEntry& entry : last_only) {
    if (entry.logits == LogitsWanted::kAll) entry.logits = LogitsWanted::kNone;
  }
  Logits(last_only, &step_logits_);
  const int64_t vocab = config().vocab_size;
  results->clear();
  for (size_t i = 0; i < samples.size(); ++i) {
    results->push_back(sampler_->SampleFor(
        samples[i], std::span<const float>(step_logits_.data() + i * vocab, vocab)));
  }
  return absl::OkStatus();
}

absl::Status CpuEngine::Step(std::span<const BatchEntry> entries,
                             std::span<const SampleSpec> samples,
                             std::vector<SampleResult>* results) {
  if (!stage_.whole_model()) {
    return absl::FailedPreconditionError(
        "Step needs the whole model; a pipeline stage runs StageStep");
  }
  if (absl::Status s = CheckSamples(entries, samples); !s.ok()) return Refuse(s);
  if (absl::Status s = Validate(entries); !s.ok()) return Refuse(s);
  RETURN_IF_ERROR(Run(entries, {}));
  return Sample(entries, samples, results);
}

absl::Status CpuEngine::StageStep(std::span<const BatchEntry> entries,
                                  std::span<const SampleSpec> samples, const StageIo& io,
                                  std::vector<SampleResult>* results) {
  if (io.on_device)
    return absl::InvalidArgumentError("the CPU engine keeps its stage messages in host memory");
  if (stage_.last() && io.logits == nullptr) {
    if (absl::Status s = CheckSamples(entries, samples); !s.ok()) return Refuse(s);
  }
  if (!stage_.last() && io.output == nullptr) {
    return Refuse(
        absl::InvalidArgumentError("a stage that is not the last needs an output buffer"));
  }
  if (absl::Status s = Validate(entries); !s.ok()) return Refuse(s);
  int64_t m = 0;
  for (const BatchEntry& entry : entries) m += entry.tokens.size();
  const int64_t h = config().hidden_size;
  if (!stage_.first() && static_cast<int64_t>(io.input.size()) != TransferBytes(transfer_, m, h)) {
    return Refuse(absl::InvalidArgumentError(
        absl::StrCat("pipeline stage ", stage_.stage, ": input of ", io.input.size(), " bytes; ", m,
                     " tokens of ", h, " in ", TransferDtypeName(transfer_), " are ",
                     TransferBytes(transfer_, m, h))));
  }
  RETURN_IF_ERROR(Run(entries, io.input));
  if (!stage_.last()) {
    io.output->resize(TransferBytes(transfer_, m, h));
    EncodeHidden(transfer_, x_.data(), m, h, io.output->data());
    return absl::OkStatus();
  }
  if (io.logits != nullptr) {
    Logits(entries, io.logits);
    return absl::OkStatus();
  }
  return Sample(entries, samples, results);
}

absl::Status CpuEngine::Run(std::span<const BatchEntry> entries, std::span<const uint8_t> input) {
  const ModelConfig& c = config();
  const int64_t h = c.hidden_size, inter = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
  int64_t m = 0;
  for (const BatchEntry& entry : entries) m += entry.tokens.size();
  const int64_t widest = std::max({h, inter, qd});
  Grow(x_, m * h);
  Grow(a_, m * widest);
  Grow(q_, m * qd);
  Grow(k_, m * kvd);
  Grow(v_, m * kvd);
  Grow(o_, m * widest);
  if (static_cast<int64_t>(aq_.size()) < m * widest) aq_.resize(m * widest);
  Grow(scales_, m);

  ids_.clear();
  positions_.clear();
  for (const BatchEntry& entry : entries) {
    for (size_t i = 0; i < entry.tokens.size(); ++i) {
      ids_.push_back(entry.tokens[i]);
      positions_.push_back(static_cast<int32_t>(entry.start_position + i));
    }
  }
  if (stage_.first()) {
    cpu::Bf16GatherRows(weights_.embedding.data(), h, ids_.data(), m, x_.data());
  } else {
    DecodeHidden(transfer_, input.data(), m, h, x_.data());
  }
  entries_ = entries;
  tokens_ = m;
  if (c.is_moe()) {
    expert_rows_.assign(int64_t{stage_.layer_end - stage_.layer_begin} * c.num_experts, 0);
  }
  // Only an expert exchange can fail (a peer rank is gone).
  const absl::Status status = RunDecoderLayers(*this, c, stage_.layer_begin, stage_.layer_end);
  entries_ = {};
  return status;
}

absl::Status CpuEngine::Attention(int l) {
  const ModelConfig& c = config();
  const int64_t m = tokens_, h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const LayerWeights& w = weights_.layers[l];
  // q, k and v share one quantization of the normed input.
  cpu::RmsNorm(x_.data(), w.input_norm.data(), m, h, eps, a_.data());
  if (trace_) trace_("qkv_in", l, a_.data(), m, h);
  cpu::ActQuantPerToken(a_.data(), m, h, aq_.data(), scales_.data());
  cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.q.values.data(), qd, h, w.q.scale, q_.data());
  cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.k.values.data(), kvd, h, w.k.scale,
                     k_.data());
  cpu::TernaryMatmul(aq_.data(), scales_.data(), m, w.v.values.data(), kvd, h, w.v.scale,
                     v_.data());
  cpu::RopeNeox(q_.data(), m, c.num_attention_heads, c.head_dim, positions_.data(),
                rope_.inv_freq.data(), rope_.attention_scaling);
  cpu::RopeNeox(k_.data(), m, c.num_key_value_heads, c.head_dim, positions_.data(),
                rope_.inv_freq.data(), rope_.attention_scaling);
  if (kv_rotation_ == KvRotation::kHadamard) {
    // Before k is cached and q reads it: q . k is kept, the keys' outlier channels are spread.
    cpu::HadamardRotateRows(q_.data(), m * c.num_attention_heads, c.head_dim);
    cpu::HadamardRotateRows(k_.data(), m * c.num_key_value_heads, c.head_dim);
  }
  SelfAttention(l);
  cpu::RmsNorm(o_.data(), w.attn_sub_norm.data(), m, qd, eps, o_.data());
  if (trace_) trace_("o_in", l, o_.data(), m, qd);
  QuantizedLinear(o_.data(), m, w.o, aq_, scales_, a_.data());
  cpu::AddInPlace(x_.data(), a_.data(), m * h);
  return absl::OkStatus();
}

absl::Status CpuEngine::DenseFfn(int l) {
  const ModelConfig& c = config();
  const int64_t m = tokens_, h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // gate and up share one quantization of the normed input.
  cpu::RmsNorm(x_.data(), weights_.layers[l].post_attention_norm.data(), m, h, eps, a_.data());
  if (trace_) trace_("gate_up_in", l, a_.data(), m, h);
  cpu::ActQuantPerToken(a_.data(), m, h, aq_.data(), scales_.data());
  std::function<void(const float*, int64_t, int64_t)> down_in;
  if (trace_)
    down_in = [&](const float* g, int64_t rows, int64_t inter) {
      trace_("down_in", l, g, rows, inter);
    };
  cpu::BitnetFfn(weights_.layers[l].ffn, aq_.data(), scales_.data(), m, h, eps, ffn_scratch_,
                 a_.data(), down_in);
  cpu::AddInPlace(x_.data(), a_.data(), m * h);
  return absl::OkStatus();
}

absl::Status CpuEngine::MoeFfn(int l) {
  const ModelConfig& c = config();
  const int64_t m = tokens_, h = c.hidden_size;
  cpu::RmsNorm(x_.data(), weights_.layers[l].post_attention_norm.data(), m, h,
               static_cast<float>(c.rms_norm_eps), a_.data());
  if (trace_) trace_("gate_up_in", l, a_.data(), m, h);
  // Router + experts (kernels/cpu/moe_ffn.h); o_ is free after the attention block.
  if (expert_exchange_ != nullptr) {
    RETURN_IF_ERROR(ExpertParallelMoe(l, a_.data(), m, o_.data()));
  } else {
    cpu::MoeFeedForward(weights_.layers[l].moe, moe_shape_, a_.data(), m, o_.data(), &ffn_scratch_);
    int64_t* rows = expert_rows_.data() + int64_t{l - stage_.layer_begin} * c.num_experts;
    for (int64_t i = 0; i < m * c.num_experts_per_tok; ++i) ++rows[ffn_scratch_.experts[i]];
  }
  cpu::AddInPlace(x_.data(), o_.data(), m * h);
  return absl::OkStatus();
}

void CpuEngine::SelfAttention(int layer) {
  const std::span<const BatchEntry> entries = entries_;
  const ModelConfig& c = config();
  const int64_t qd = c.q_dim(), kvd = c.kv_dim();
  const cpu::AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                                  static_cast<float>(1.0 / std::sqrt(double{1.0} * c.head_dim))};
  int64_t row = 0;
  for (const BatchEntry& entry : entries) {
    const int64_t n = entry.tokens.size();
    const int64_t start = entry.start_position;
    for (int64_t i = 0; i < n; ++i) {
      kv_.Write(layer, entry.block_table, start + i, k_.data() + (row + i) * kvd,
                v_.data() + (row + i) * kvd);
    }
    // The reference attention reads one sequence's history contiguously.
    Grow(kv_keys_, (start + n) * kvd);
    Grow(kv_values_, (start + n) * kvd);
    kv_.Gather(layer, entry.block_table, start + n, kv_keys_.data(), kv_values_.data());
    cpu::AttentionCausal(q_.data() + row * qd, n, start, kv_keys_.data(), kv_values_.data(), kvd,
                         shape, o_.data() + row * qd);
    row += n;
  }
}

}  // namespace bitserve
