#include "runtime/checkpoint/model_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/bf16.h"
#include "base/status_macros.h"
#include "kernels/cpu/parallel.h"
#include "runtime/checkpoint/safetensors_archive.h"
#include "runtime/checkpoint/ternary_packing.h"

namespace bitserve {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string Where(const SafetensorsArchive::Entry& e) {
  return absl::StrCat(e.file->path().string(), ": tensor ", e.info->name);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(frac), -24);
  } else if (exp == 31) {
    v = frac ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(frac | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

// Norm weights and scales: any float dtype, converted exactly to float32.
absl::StatusOr<std::vector<float>> ReadFloats(const SafetensorsArchive::Entry& e) {
  const size_t n = static_cast<size_t>(e.info->num_elements());
  std::vector<float> out(n);
  const uint8_t* p = e.bytes.data();
  for (size_t i = 0; i < n; ++i) {
    switch (e.info->dtype) {
      case DType::kBF16: {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[i] = Bf16ToFloat(b);
        break;
      }
      case DType::kF16: {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[i] = HalfToFloat(b);
        break;
      }
      case DType::kF32:
        std::memcpy(&out[i], p + 4 * i, 4);
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(Where(e), ": dtype ",
                                                       std::string(DTypeName(e.info->dtype)),
                                                       " is not a float type (BF16, F16 or F32)"));
    }
    if (!std::isfinite(out[i])) {
      return absl::DataLossError(absl::StrCat(Where(e), ": element ", i, " is not finite"));
    }
  }
  return out;
}

// The embedding, LM head and routers: BF16 as stored, every element checked to be finite (a NaN
// or Inf there would silently turn every output into token 0). The copy and the check are one
// pass over memory, split over the CPU threads; the check costs ~0.1 s per 2 GB on one core,
// against 6+ s for allocating and copying llama-70b's embedding on a 2-core VM (docs/perf.md,
// "Load-time finiteness check").
absl::StatusOr<std::vector<uint16_t>> ReadBf16(const SafetensorsArchive::Entry& e) {
  const int64_t n = e.info->num_elements();
  std::vector<uint16_t> out(static_cast<size_t>(n));
  std::vector<int64_t> first_bad;  // per chunk; -1: none
  std::mutex mu;
  cpu::ParallelFor(n, int64_t{1} << 20, [&](int64_t begin, int64_t end) {
    std::memcpy(out.data() + begin, e.bytes.data() + 2 * begin,
                static_cast<size_t>(end - begin) * 2);
    // A bf16 is NaN or Inf when its 8 exponent bits are all ones. Branch-free so that it
    // vectorizes.
    uint32_t any = 0;
    for (int64_t i = begin; i < end; ++i) any |= (out[i] & 0x7F80u) == 0x7F80u;
    if (!any) return;
    for (int64_t i = begin; i < end; ++i) {
      if ((out[i] & 0x7F80u) == 0x7F80u) {
        std::lock_guard<std::mutex> lock(mu);
        first_bad.push_back(i);
        return;
      }
    }
  });
  if (first_bad.empty()) return out;
  const int64_t i = *std::min_element(first_bad.begin(), first_bad.end());
  const int64_t cols = e.info->shape.empty() ? 1 : e.info->shape.back();
  return absl::DataLossError(
      absl::StrCat(Where(e), ": element ", i, " (row ", i / cols, ", column ", i % cols, ") is ",
                   (out[i] & 0x7Fu) != 0 ? "NaN" : "infinite", "; every weight must be finite"));
}

// Which MoE config field asks for a missing tensor, to make the error actionable.
std::string MoeHint(const std::string& name) {
  if (name.find(".mlp.experts.") != std::string::npos)
    return " (num_experts / moe_intermediate_size)";
  if (name.find(".mlp.shared_expert") != std::string::npos)
    return " (shared_expert_intermediate_size > 0)";
  if (name.find(".mlp.gate.weight") != std::string::npos)
    return " (the router of model_type bitnet_moe)";
  return "";
}

class Loader {
 public:
  Loader(const ModelConfig& config, const SafetensorsArchive& archive)
      : config_(config), archive_(archive) {
    for (TensorLayout& t : CheckpointLayout(config)) layout_.emplace(t.name, std::move(t));
  }

  // Every expected tensor present with the right dtype and shape; nothing unexpected.
  absl::Status CheckInventory() const {
    for (const auto& [name, want] : layout_) {
      const SafetensorsArchive::Entry* e = archive_.Find(name);
      if (e == nullptr) {
        return absl::NotFoundError(absl::StrCat(
            "checkpoint is missing tensor ", name, " (", std::string(DTypeName(want.dtype)), " ",
            ShapeString(want.shape), ") required by config.json",
            want.role == TensorRole::kLmHead ? " (tie_word_embeddings is false)" : "",
            config_.is_moe() ? MoeHint(name) : ""));
      }
      // A scale may be stored as shape [1] (transformers) or as a scalar [].
      const bool scalar_scale = want.role == TensorRole::kWeightScale && e->info->shape.empty();
      if (e->info->shape != want.shape && !scalar_scale) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(*e), ": shape ", ShapeString(e->info->shape),
                         " does not match config.json, which implies ", ShapeString(want.shape)));
      }
      const bool float_ok = want.role == TensorRole::kNorm || want.role == TensorRole::kWeightScale;
      const DType got = e->info->dtype;
      const bool dtype_ok =
          got == want.dtype || (float_ok && (got == DType::kF16 || got == DType::kF32));
      if (!dtype_ok) {
        return absl::InvalidArgumentError(absl::StrCat(Where(*e), ": dtype ",
                                                       std::string(DTypeName(got)), ", expected ",
                                                       std::string(DTypeName(want.dtype))));
      }
    }
    for (const std::string& name : archive_.TensorNames()) {
      if (layout_.count(name)) continue;
      const SafetensorsArchive::Entry* e = archive_.Find(name);
      std::string hint;
      if (name == "lm_head.weight") hint = " (config.json has tie_word_embeddings true)";
      if (name.find(".mlp.experts.") != std::string::npos ||
          name.find(".mlp.shared_expert") != std::string::npos) {
        hint =
            " (more experts or a shared expert than config.json's num_experts / "
            "shared_expert_intermediate_size declare, or a dense config)";
      }
      return absl::InvalidArgumentError(
          absl::StrCat(Where(*e), ": unexpected tensor for this config", hint));
    }
    return absl::OkStatus();
  }

  const ModelConfig& config() const { return config_; }

  const SafetensorsArchive::Entry& Get(const std::string& name) const {
    return *archive_.Find(name);
  }

  absl::StatusOr<std::vector<float>> Floats(const std::string& name) const {
    return ReadFloats(Get(name));
  }

  absl::StatusOr<TernaryMatrix> Ternary(const std::string& prefix) const {
    const SafetensorsArchive::Entry& w = Get(prefix + ".weight");
    const SafetensorsArchive::Entry& s = Get(prefix + ".weight_scale");
    TernaryMatrix m;
    m.rows = w.info->shape[0] * 4;
    m.cols = w.info->shape[1];
    m.values.resize(static_cast<size_t>(m.rows * m.cols));
    RETURN_IF_ERROR(UnpackTernary(w.bytes, m.rows, m.cols, m.values, Where(w)));
    ASSIGN_OR_RETURN(std::vector<float> scale, ReadFloats(s));
    if (!(scale[0] > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(s), ": weight_scale must be positive, got ", scale[0]));
    }
    m.scale = {scale[0], config_.linear_class == LinearClass::kBitLinear};
    return m;
  }

 private:
  const ModelConfig& config_;
  const SafetensorsArchive& archive_;
  std::map<std::string, TensorLayout> layout_;
};

absl::StatusOr<FfnWeights> LoadFfn(const Loader& loader, const std::string& prefix) {
  FfnWeights f;
  ASSIGN_OR_RETURN(f.sub_norm, loader.Floats(prefix + "ffn_sub_norm.weight"));
  ASSIGN_OR_RETURN(f.gate, loader.Ternary(prefix + "gate_proj"));
  ASSIGN_OR_RETURN(f.up, loader.Ternary(prefix + "up_proj"));
  ASSIGN_OR_RETURN(f.down, loader.Ternary(prefix + "down_proj"));
  return f;
}

absl::StatusOr<LayerWeights> LoadLayer(const Loader& loader, int index,
                                       std::span<const int32_t> expert_ids) {
  const std::string p = absl::StrCat("model.layers.", index, ".");
  LayerWeights l;
  ASSIGN_OR_RETURN(l.input_norm, loader.Floats(p + "input_layernorm.weight"));
  ASSIGN_OR_RETURN(l.post_attention_norm, loader.Floats(p + "post_attention_layernorm.weight"));
  ASSIGN_OR_RETURN(l.attn_sub_norm, loader.Floats(p + "self_attn.attn_sub_norm.weight"));
  ASSIGN_OR_RETURN(l.q, loader.Ternary(p + "self_attn.q_proj"));
  ASSIGN_OR_RETURN(l.k, loader.Ternary(p + "self_attn.k_proj"));
  ASSIGN_OR_RETURN(l.v, loader.Ternary(p + "self_attn.v_proj"));
  ASSIGN_OR_RETURN(l.o, loader.Ternary(p + "self_attn.o_proj"));
  if (loader.config().is_moe()) {
    const ModelConfig& c = loader.config();
    ASSIGN_OR_RETURN(l.moe.router, ReadBf16(loader.Get(p + "mlp.gate.weight")));
    l.moe.experts.resize(c.num_experts);
    for (int e = 0; e < c.num_experts; ++e) {
      if (!expert_ids.empty() &&
          std::find(expert_ids.begin(), expert_ids.end(), e) == expert_ids.end()) {
        continue;
      }
      ASSIGN_OR_RETURN(l.moe.experts[e], LoadFfn(loader, absl::StrCat(p, "mlp.experts.", e, ".")));
    }
    if (c.shared_expert_intermediate_size > 0) {
      ASSIGN_OR_RETURN(l.moe.shared, LoadFfn(loader, p + "mlp.shared_expert."));
      ASSIGN_OR_RETURN(l.moe.shared_gate,
                       ReadBf16(loader.Get(p + "mlp.shared_expert_gate.weight")));
    }
    return l;
  }
  ASSIGN_OR_RETURN(l.ffn, LoadFfn(loader, p + "mlp."));
  return l;
}

}  // namespace

std::vector<TensorLayout> CheckpointLayout(const ModelConfig& c) {
  std::vector<TensorLayout> t;
  const int64_t h = c.hidden_size, inter = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  t.push_back(
      {"model.embed_tokens.weight", TensorRole::kEmbedding, DType::kBF16, {c.vocab_size, h}});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto norm = [&](const std::string& name, int64_t n) {
      t.push_back({p + name, TensorRole::kNorm, DType::kBF16, {n}});
    };
    auto ternary = [&](const std::string& name, int64_t out, int64_t in) {
      t.push_back({p + name + ".weight", TensorRole::kTernary, DType::kU8, {out / 4, in}});
      t.push_back({p + name + ".weight_scale", TensorRole::kWeightScale, DType::kBF16, {1}});
    };
    norm("input_layernorm.weight", h);
    ternary("self_attn.q_proj", q, h);
    ternary("self_attn.k_proj", kv, h);
    ternary("self_attn.v_proj", kv, h);
    norm("self_attn.attn_sub_norm.weight", q);
    ternary("self_attn.o_proj", h, q);
    norm("post_attention_layernorm.weight", h);
    auto ffn = [&](const std::string& prefix, int64_t width) {
      ternary(prefix + "gate_proj", width, h);
      ternary(prefix + "up_proj", width, h);
      norm(prefix + "ffn_sub_norm.weight", width);
      ternary(prefix + "down_proj", h, width);
    };
    if (!c.is_moe()) {
      ffn("mlp.", inter);
      continue;
    }
    t.push_back({p + "mlp.gate.weight", TensorRole::kRouter, DType::kBF16, {c.num_experts, h}});
    for (int e = 0; e < c.num_experts; ++e)
      ffn(absl::StrCat("mlp.experts.", e, "."), c.moe_intermediate_size);
    if (c.shared_expert_intermediate_size > 0) {
      ffn("mlp.shared_expert.", c.shared_expert_intermediate_size);
      t.push_back({p + "mlp.shared_expert_gate.weight", TensorRole::kRouter, DType::kBF16, {1, h}});
    }
  }
  t.push_back({"model.norm.weight", TensorRole::kNorm, DType::kBF16, {h}});
  if (!c.tie_word_embeddings) {
    t.push_back({"lm_head.weight", TensorRole::kLmHead, DType::kBF16, {c.vocab_size, h}});
  }
  return t;
}

namespace {

absl::Status CheckLayerRange(const ModelConfig& c, int begin, int end) {
  if (begin < 0 || end < begin || end > c.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layers [", begin, ", ", end, ") are not a range of the ", c.num_hidden_layers, " layers"));
  }
  return absl::OkStatus();
}

}  // namespace

struct CheckpointReader::State {
  ModelConfig config;
  SafetensorsArchive archive;
  std::unique_ptr<Loader> loader;  // refers to config and archive above
};

CheckpointReader::CheckpointReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
CheckpointReader::~CheckpointReader() = default;

const ModelConfig& CheckpointReader::config() const { return state_->config; }

absl::StatusOr<CheckpointReader> CheckpointReader::Open(const std::filesystem::path& dir) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(SafetensorsArchive archive, SafetensorsArchive::Open(dir));
  auto state = std::make_unique<State>(State{std::move(config), std::move(archive), nullptr});
  state->loader = std::make_unique<Loader>(state->config, state->archive);
  RETURN_IF_ERROR(state->loader->CheckInventory());
  return CheckpointReader(std::move(state));
}

absl::StatusOr<ModelWeights> CheckpointReader::StageEnds(const PipelineStage& stage) const {
  const Loader& loader = *state_->loader;
  ModelWeights w;
  w.config = state_->config;
  RETURN_IF_ERROR(stage.Validate(w.config.num_hidden_layers));
  w.layers.resize(w.config.num_hidden_layers);
  const bool tied = w.config.tie_word_embeddings;
  if (stage.first() || (stage.last() && tied)) {
    ASSIGN_OR_RETURN(w.embedding, ReadBf16(loader.Get("model.embed_tokens.weight")));
  }
  if (stage.last()) {
    if (!tied) {
      ASSIGN_OR_RETURN(w.lm_head, ReadBf16(loader.Get("lm_head.weight")));
    }
    ASSIGN_OR_RETURN(w.final_norm, loader.Floats("model.norm.weight"));
  }
  return w;
}

absl::StatusOr<std::vector<LayerWeights>> CheckpointReader::Layers(
    int begin, int end, std::span<const int32_t> expert_ids) const {
  RETURN_IF_ERROR(CheckLayerRange(state_->config, begin, end));
  for (int32_t e : expert_ids) {
    if (e < 0 || e >= state_->config.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", e, " is not one of the model's ",
                                                     state_->config.num_experts, " experts"));
    }
  }
  std::vector<LayerWeights> layers(end - begin);
  std::vector<absl::Status> status(layers.size());
  cpu::ParallelFor(static_cast<int64_t>(layers.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      absl::StatusOr<LayerWeights> layer =
          LoadLayer(*state_->loader, static_cast<int>(begin + i), expert_ids);
      if (layer.ok()) {
        layers[i] = *std::move(layer);
      } else {
        status[i] = layer.status();
      }
    }
  });
  for (const absl::Status& s : status) RETURN_IF_ERROR(s);
  return layers;
}

absl::StatusOr<ModelWeights> LoadModelWeights(const std::filesystem::path& dir,
                                              const PipelineStage& stage,
                                              std::span<const int32_t> expert_ids) {
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(dir));
  ASSIGN_OR_RETURN(ModelWeights w, reader.StageEnds(stage));
  const int begin = stage.layer_begin, end = stage.end(w.config.num_hidden_layers);
  ASSIGN_OR_RETURN(std::vector<LayerWeights> layers, reader.Layers(begin, end, expert_ids));
  for (int i = begin; i < end; ++i) w.layers[i] = std::move(layers[i - begin]);
  return w;
}

}  // namespace bitserve
