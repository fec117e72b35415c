#include "runtime/checkpoint/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace bitserve {
namespace {

using json = nlohmann::json;

// Dimensions beyond this are refused: they would overflow the int32/int64 index math long before
// they could be served, and a corrupted config should fail here, not in an allocation.
constexpr int64_t kMaxDim = 1 << 22;
constexpr int64_t kMaxLayers = 4096;

class Fields {
 public:
  Fields(const json& object, absl::string_view source) : object_(object), source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field \"", field, "\" ", what));
  }

  bool Has(absl::string_view field) const {
    auto it = object_.find(field);
    return it != object_.end() && !it->is_null();
  }

  bool IsEmptyArray(absl::string_view field) const {
    auto it = object_.find(field);
    return it != object_.end() && it->is_array() && it->empty();
  }

  absl::StatusOr<int> Int(absl::string_view field, int64_t min, int64_t max) const {
    if (!Has(field)) return Error(field, "is missing");
    const json& v = object_.at(std::string(field));
    if (!v.is_number_integer())
      return Error(field, absl::StrCat("must be an integer, got ", v.dump()));
    int64_t value = v.get<int64_t>();
    if (value < min || value > max) {
      return Error(field, absl::StrCat("must be in [", min, ", ", max, "], got ", value));
    }
    return static_cast<int>(value);
  }

  absl::StatusOr<double> Number(absl::string_view field) const {
    if (!Has(field)) return Error(field, "is missing");
    const json& v = object_.at(std::string(field));
    if (!v.is_number()) return Error(field, absl::StrCat("must be a number, got ", v.dump()));
    return v.get<double>();
  }

  absl::StatusOr<std::string> String(absl::string_view field) const {
    if (!Has(field)) return Error(field, "is missing");
    const json& v = object_.at(std::string(field));
    if (!v.is_string()) return Error(field, absl::StrCat("must be a string, got ", v.dump()));
    return v.get<std::string>();
  }

  absl::StatusOr<bool> Bool(absl::string_view field, bool fallback) const {
    if (!Has(field)) return fallback;
    const json& v = object_.at(std::string(field));
    if (!v.is_boolean()) return Error(field, absl::StrCat("must be true or false, got ", v.dump()));
    return v.get<bool>();
  }

 private:
  const json& object_;
  std::string source_;
};

absl::StatusOr<LinearClass> ParseQuantization(const json& root, absl::string_view source) {
  auto it = root.find("quantization_config");
  if (it == root.end() || it->is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": field \"quantization_config\" is missing; bitserve serves BitNet b1.58 "
                     "checkpoints with quant_method \"bitnet\" (packed ternary weights)"));
  }
  if (!it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"quantization_config\" must be an object"));
  }
  std::string where = absl::StrCat(source, " quantization_config");
  Fields q(*it, where);
  ASSIGN_OR_RETURN(std::string method, q.String("quant_method"));
  if (method != "bitnet")
    return q.Error("quant_method", absl::StrCat("must be \"bitnet\", got \"", method, "\""));
  std::string linear = "bitlinear";  // transformers' BitNetQuantConfig default
  if (q.Has("linear_class")) {
    ASSIGN_OR_RETURN(linear, q.String("linear_class"));
  }
  std::string mode = "offline";
  if (q.Has("quantization_mode")) {
    ASSIGN_OR_RETURN(mode, q.String("quantization_mode"));
  }
  if (mode != "offline") {
    return q.Error(
        "quantization_mode",
        absl::StrCat("must be \"offline\" (packed ternary weights), got \"", mode,
                     "\"; online quantization of full-precision weights is not supported"));
  }
  ASSIGN_OR_RETURN(bool use_rms_norm, q.Bool("use_rms_norm", false));
  if (use_rms_norm)
    return q.Error("use_rms_norm", "true is not supported (BitNet b1.58 uses explicit sub-norms)");
  if (linear == "autobitlinear") return LinearClass::kAutoBitLinear;
  if (linear == "bitlinear") return LinearClass::kBitLinear;
  return q.Error("linear_class",
                 absl::StrCat("must be \"autobitlinear\" or \"bitlinear\", got \"", linear, "\""));
}

absl::StatusOr<std::vector<int>> ParseEos(const json& root, absl::string_view source) {
  std::vector<int> ids;
  auto it = root.find("eos_token_id");
  if (it == root.end() || it->is_null()) return ids;
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field \"eos_token_id\" must be a token id or a list of token ids, got ",
        it->dump()));
  };
  if (it->is_number_integer()) {
    ids.push_back(it->get<int>());
  } else if (it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number_integer()) return bad();
      ids.push_back(v.get<int>());
    }
  } else {
    return bad();
  }
  return ids;
}

// The MoE fields, by Qwen-MoE names (Mixtral's num_local_experts is accepted for num_experts).
absl::Status ParseMoe(const Fields& f, ModelConfig* c) {
  const bool qwen = f.Has("num_experts"), mixtral = f.Has("num_local_experts");
  if (!qwen && !mixtral)
    return f.Error("num_experts", "is missing (model_type \"bitnet_moe\" needs it)");
  if (qwen) {
    ASSIGN_OR_RETURN(c->num_experts, f.Int("num_experts", 1, 1 << 16));
  }
  if (mixtral) {
    ASSIGN_OR_RETURN(int local, f.Int("num_local_experts", 1, 1 << 16));
    if (qwen && local != c->num_experts) {
      return f.Error("num_local_experts", absl::StrCat("(", local, ") disagrees with num_experts (",
                                                       c->num_experts, ")"));
    }
    c->num_experts = local;
  }
  ASSIGN_OR_RETURN(c->num_experts_per_tok, f.Int("num_experts_per_tok", 1, 1 << 16));
  ASSIGN_OR_RETURN(c->moe_intermediate_size, f.Int("moe_intermediate_size", 4, kMaxDim));
  ASSIGN_OR_RETURN(c->norm_topk_prob, f.Bool("norm_topk_prob", true));
  if (f.Has("shared_expert_intermediate_size")) {
    ASSIGN_OR_RETURN(c->shared_expert_intermediate_size,
                     f.Int("shared_expert_intermediate_size", 0, kMaxDim));
  }
  // Qwen-MoE's dense-layer options: bitserve's MoE checkpoints have experts in every layer.
  if (f.Has("decoder_sparse_step")) {
    ASSIGN_OR_RETURN(int step, f.Int("decoder_sparse_step", 1, kMaxLayers));
    if (step != 1) return f.Error("decoder_sparse_step", "must be 1 (every layer has experts)");
  }
  if (f.Has("mlp_only_layers") && !f.IsEmptyArray("mlp_only_layers")) {
    return f.Error("mlp_only_layers",
                   "must be empty (dense layers in an MoE model are not supported)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view LinearClassName(LinearClass linear_class) {
  return linear_class == LinearClass::kAutoBitLinear ? "autobitlinear" : "bitlinear";
}

absl::Status ModelConfig::Validate() const {
  auto bad = [](absl::string_view field, std::string what) {
    return absl::InvalidArgumentError(absl::StrCat("config field \"", field, "\" ", what));
  };
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad("num_key_value_heads",
               absl::StrCat("(", num_key_value_heads, ") must divide num_attention_heads (",
                            num_attention_heads, ")"));
  }
  if (head_dim % 2 != 0)
    return bad("head_dim", absl::StrCat("must be even for RoPE, got ", head_dim));
  // Packed ternary rows hold 4 output rows a byte: every projection's output size must be a
  // multiple of 4.
  const std::pair<absl::string_view, int> outs[] = {{"hidden_size", hidden_size},
                                                    {"intermediate_size", intermediate_size},
                                                    {"num_attention_heads * head_dim", q_dim()},
                                                    {"num_key_value_heads * head_dim", kv_dim()}};
  for (const auto& [name, value] : outs) {
    if (value % 4 != 0) return bad(name, absl::StrCat("must be a multiple of 4, got ", value));
    if (value > kMaxDim) return bad(name, absl::StrCat("is too large: ", value));
  }
  for (int id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return bad("eos_token_id",
                 absl::StrCat(id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  if (bos_token_id >= vocab_size) {
    return bad("bos_token_id",
               absl::StrCat(bos_token_id, " is outside the vocabulary [0, ", vocab_size, ")"));
  }
  if (is_moe()) {
    if (num_experts_per_tok < 1 || num_experts_per_tok > num_experts) {
      return bad("num_experts_per_tok", absl::StrCat("must be in [1, num_experts = ", num_experts,
                                                     "], got ", num_experts_per_tok));
    }
    const std::pair<absl::string_view, int> moe_outs[] = {
        {"moe_intermediate_size", moe_intermediate_size},
        {"shared_expert_intermediate_size", shared_expert_intermediate_size}};
    for (const auto& [name, value] : moe_outs) {
      if (value % 4 != 0) return bad(name, absl::StrCat("must be a multiple of 4, got ", value));
      if (value > kMaxDim) return bad(name, absl::StrCat("is too large: ", value));
    }
    if (moe_intermediate_size < 4) {
      return bad("moe_intermediate_size",
                 absl::StrCat("must be at least 4, got ", moe_intermediate_size));
    }
  }
  if (!(rope_theta > 0)) return bad("rope_theta", "must be positive");
  if (!(rms_norm_eps > 0)) return bad("rms_norm_eps", "must be positive");
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!root.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": must be a JSON object"));
  Fields f(root, source);

  // "bitnet": transformers' BitNetForCausalLM; "bitnet_moe": bitserve's MoE format.
  bool moe = false;
  if (f.Has("model_type")) {
    ASSIGN_OR_RETURN(std::string type, f.String("model_type"));
    if (type != "bitnet" && type != "bitnet_moe") {
      return f.Error("model_type",
                     absl::StrCat("must be \"bitnet\" or \"bitnet_moe\", got \"", type, "\""));
    }
    moe = type == "bitnet_moe";
  }
  if (f.Has("architectures")) {
    const std::string want = moe ? "BitNetMoeForCausalLM" : "BitNetForCausalLM";
    const json& arch = root["architectures"];
    bool ok = arch.is_array() && !arch.empty();
    for (const json& a : arch) ok = ok && a.is_string() && a.get<std::string>() == want;
    if (!ok) {
      return f.Error("architectures",
                     absl::StrCat("must be [\"", want, "\"] for model_type \"",
                                  moe ? "bitnet_moe" : "bitnet", "\", got ", arch.dump()));
    }
  }
  if (!moe) {
    for (absl::string_view field : {"num_experts", "num_local_experts", "num_experts_per_tok"}) {
      if (f.Has(field)) {
        return f.Error(field,
                       "is a mixture-of-experts field; such checkpoints need model_type "
                       "\"bitnet_moe\" (docs/formats.md)");
      }
    }
  }
  if (f.Has("hidden_act")) {
    ASSIGN_OR_RETURN(std::string act, f.String("hidden_act"));
    if (act != "relu2")
      return f.Error("hidden_act", absl::StrCat("must be \"relu2\", got \"", act, "\""));
  }
  ASSIGN_OR_RETURN(bool attention_bias, f.Bool("attention_bias", false));
  if (attention_bias)
    return f.Error("attention_bias", "true is not supported (BitNet has no biases)");

  ModelConfig c;
  ASSIGN_OR_RETURN(c.hidden_size, f.Int("hidden_size", 4, kMaxDim));
  if (moe) RETURN_IF_ERROR(ParseMoe(f, &c));
  if (moe && !f.Has("intermediate_size")) {
    c.intermediate_size =
        c.moe_intermediate_size;  // unused by MoE layers; keeps scratch sizes sane
  } else {
    ASSIGN_OR_RETURN(c.intermediate_size, f.Int("intermediate_size", 4, kMaxDim));
  }
  ASSIGN_OR_RETURN(c.num_hidden_layers, f.Int("num_hidden_layers", 1, kMaxLayers));
  ASSIGN_OR_RETURN(c.num_attention_heads, f.Int("num_attention_heads", 1, kMaxDim));
  c.num_key_value_heads = c.num_attention_heads;
  if (f.Has("num_key_value_heads")) {
    ASSIGN_OR_RETURN(c.num_key_value_heads, f.Int("num_key_value_heads", 1, kMaxDim));
  }
  if (f.Has("head_dim")) {
    ASSIGN_OR_RETURN(c.head_dim, f.Int("head_dim", 2, 1 << 16));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return f.Error("head_dim", absl::StrCat("is absent and hidden_size (", c.hidden_size,
                                              ") is not divisible by num_attention_heads (",
                                              c.num_attention_heads, ")"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  ASSIGN_OR_RETURN(c.vocab_size, f.Int("vocab_size", 1, 1 << 24));
  ASSIGN_OR_RETURN(c.max_position_embeddings, f.Int("max_position_embeddings", 1, 1 << 30));
  // RoPE: rope_theta and rope_scaling, or transformers 5's rope_parameters holding both.
  const char* rope_field = f.Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (f.Has("rope_parameters") && f.Has("rope_scaling")) {
    return f.Error("rope_scaling", "and rope_parameters are both set; keep one");
  }
  if (!f.Has("rope_theta") && f.Has("rope_parameters") && root["rope_parameters"].is_object() &&
      root["rope_parameters"].contains("rope_theta")) {
    const std::string rope_source = absl::StrCat(source, " rope_parameters");
    Fields rope(root["rope_parameters"], rope_source);
    ASSIGN_OR_RETURN(c.rope_theta, rope.Number("rope_theta"));
  } else {
    ASSIGN_OR_RETURN(c.rope_theta, f.Number("rope_theta"));
  }
  if (f.Has(rope_field)) {
    absl::StatusOr<std::optional<RopeScaling>> scaling =
        ParseRopeScaling(root[rope_field], rope_field);
    if (!scaling.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", scaling.status().message()));
    }
    c.rope_scaling = *scaling;
  }
  ASSIGN_OR_RETURN(c.rms_norm_eps, f.Number("rms_norm_eps"));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, f.Bool("tie_word_embeddings", true));
  if (f.Has("bos_token_id")) {
    ASSIGN_OR_RETURN(c.bos_token_id, f.Int("bos_token_id", 0, 1 << 24));
  }
  ASSIGN_OR_RETURN(c.eos_token_ids, ParseEos(root, source));
  ASSIGN_OR_RETURN(c.linear_class, ParseQuantization(root, source));
  absl::Status valid = c.Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", valid.message()));
  return c;
}

int64_t ModelConfig::context_length() const {
  if (!rope_scaling || rope_scaling->type == RopeScaling::Type::kLlama3) {
    return max_position_embeddings;
  }
  const int64_t base = rope_scaling->type == RopeScaling::Type::kYarn &&
                               rope_scaling->original_max_position_embeddings > 0
                           ? rope_scaling->original_max_position_embeddings
                           : max_position_embeddings;
  return static_cast<int64_t>(static_cast<double>(base) * rope_scaling->factor);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& dir_or_file) {
  std::filesystem::path path = dir_or_file;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("model path ", path.string(), " does not exist"));
  }
  if (std::filesystem::is_directory(path, ec)) path /= "config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseModelConfig(text, path.string());
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j = {
      {"architectures", {"BitNetForCausalLM"}},
      {"model_type", "bitnet"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"hidden_act", "relu2"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.rms_norm_eps},
      {"initializer_range", 0.02},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"torch_dtype", "bfloat16"},
      {"use_cache", true},
      {"quantization_config",
       {{"quant_method", "bitnet"},
        {"linear_class", std::string(LinearClassName(c.linear_class))},
        {"quantization_mode", "offline"}}},
  };
  if (c.is_moe()) {
    j["architectures"] = {"BitNetMoeForCausalLM"};
    j["model_type"] = "bitnet_moe";
    j["num_experts"] = c.num_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
  }
  if (c.rope_scaling) j["rope_scaling"] = RopeScalingToJson(*c.rope_scaling);
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }
  return j.dump(2) + "\n";
}

}  // namespace bitserve
