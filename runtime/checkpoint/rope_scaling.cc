#include "runtime/checkpoint/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" ", what));
}

// A number field of the scaling object; nullopt when absent or null.
absl::StatusOr<std::optional<double>> OptionalNumber(const json& value, const std::string& field,
                                                     const char* key) {
  auto it = value.find(key);
  if (it == value.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || !std::isfinite(it->get<double>())) {
    return Bad(absl::StrCat(field, ".", key), absl::StrCat("must be a number, got ", it->dump()));
  }
  return it->get<double>();
}

// transformers' float32 default frequencies: 1 / base^(2i / dim), base rounded to float.
std::vector<float> DefaultInverseFrequencies(int head_dim, double base) {
  std::vector<float> inv(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(base), exponent);
  }
  return inv;
}

double YarnMscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// The dimension index whose wavelength turns `rotations` times over `max_positions`.
double YarnCorrectionDim(double rotations, int dim, double base, int max_positions) {
  return dim * std::log(max_positions / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
}

}  // namespace

const char* RopeScalingTypeName(RopeScaling::Type type) {
  switch (type) {
    case RopeScaling::Type::kLinear:
      return "linear";
    case RopeScaling::Type::kDynamic:
      return "dynamic";
    case RopeScaling::Type::kYarn:
      return "yarn";
    case RopeScaling::Type::kLlama3:
      return "llama3";
  }
  return "?";
}

absl::StatusOr<std::optional<RopeScaling>> ParseRopeScaling(const json& value,
                                                            const std::string& field) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_object()) return Bad(field, absl::StrCat("must be an object, got ", value.dump()));
  if (value.empty()) return std::nullopt;
  // transformers reads "rope_type", and "type" from older configs.
  const char* type_key = value.contains("rope_type") ? "rope_type" : "type";
  auto type_it = value.find(type_key);
  if (type_it == value.end() || !type_it->is_string()) {
    return Bad(absl::StrCat(field, ".rope_type"),
               "must be a string (linear, dynamic, yarn, llama3)");
  }
  const std::string type = type_it->get<std::string>();
  RopeScaling s;
  if (type == "default") return std::nullopt;
  if (type == "linear") {
    s.type = RopeScaling::Type::kLinear;
  } else if (type == "dynamic") {
    s.type = RopeScaling::Type::kDynamic;
  } else if (type == "yarn") {
    s.type = RopeScaling::Type::kYarn;
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::kLlama3;
  } else {
    return Bad(absl::StrCat(field, ".", type_key),
               absl::StrCat("\"", type,
                            "\" is not supported (default, linear, dynamic, yarn, llama3 are)"));
  }
  auto number = [&](const char* key) { return OptionalNumber(value, field, key); };
  ASSIGN_OR_RETURN(std::optional<double> factor, number("factor"));
  if (!factor) return Bad(absl::StrCat(field, ".factor"), "is missing");
  if (!(*factor >= 1)) {
    return Bad(absl::StrCat(field, ".factor"), absl::StrCat("must be >= 1, got ", *factor));
  }
  s.factor = *factor;
  ASSIGN_OR_RETURN(std::optional<double> original, number("original_max_position_embeddings"));
  if (original) {
    if (!(*original >= 1 && *original <= (1 << 30)) || *original != std::floor(*original)) {
      return Bad(absl::StrCat(field, ".original_max_position_embeddings"),
                 absl::StrCat("must be a positive integer, got ", *original));
    }
    s.original_max_position_embeddings = static_cast<int>(*original);
  }
  if (s.type == RopeScaling::Type::kLlama3) {
    if (!original) {
      return Bad(absl::StrCat(field, ".original_max_position_embeddings"),
                 "is missing (llama3 needs it)");
    }
    ASSIGN_OR_RETURN(std::optional<double> low, number("low_freq_factor"));
    ASSIGN_OR_RETURN(std::optional<double> high, number("high_freq_factor"));
    if (!low || !high) {
      return Bad(absl::StrCat(field, low ? ".high_freq_factor" : ".low_freq_factor"),
                 "is missing (llama3 needs it)");
    }
    if (!(*low > 0 && *high > *low)) {
      return Bad(absl::StrCat(field, ".high_freq_factor"),
                 absl::StrCat("must be above low_freq_factor > 0, got ", *low, " and ", *high));
    }
    s.low_freq_factor = *low;
    s.high_freq_factor = *high;
  }
  if (s.type == RopeScaling::Type::kYarn) {
    ASSIGN_OR_RETURN(s.attention_factor, number("attention_factor"));
    ASSIGN_OR_RETURN(s.mscale, number("mscale"));
    ASSIGN_OR_RETURN(s.mscale_all_dim, number("mscale_all_dim"));
    ASSIGN_OR_RETURN(std::optional<double> beta_fast, number("beta_fast"));
    ASSIGN_OR_RETURN(std::optional<double> beta_slow, number("beta_slow"));
    // transformers: `get("beta_fast") or 32`, so 0 also means the default.
    if (beta_fast && *beta_fast != 0) s.beta_fast = *beta_fast;
    if (beta_slow && *beta_slow != 0) s.beta_slow = *beta_slow;
    if (!(s.beta_fast > 0 && s.beta_slow > 0)) {
      return Bad(absl::StrCat(field, ".beta_fast"), "and beta_slow must be positive");
    }
    if (auto t = value.find("truncate"); t != value.end() && !t->is_null()) {
      if (!t->is_boolean()) return Bad(absl::StrCat(field, ".truncate"), "must be true or false");
      s.truncate = t->get<bool>();
    }
  }
  return s;
}

json RopeScalingToJson(const RopeScaling& s) {
  json j = {{"rope_type", RopeScalingTypeName(s.type)}, {"factor", s.factor}};
  if (s.original_max_position_embeddings > 0) {
    j["original_max_position_embeddings"] = s.original_max_position_embeddings;
  }
  if (s.type == RopeScaling::Type::kLlama3) {
    j["low_freq_factor"] = s.low_freq_factor;
    j["high_freq_factor"] = s.high_freq_factor;
  }
  if (s.type == RopeScaling::Type::kYarn) {
    if (s.attention_factor) j["attention_factor"] = *s.attention_factor;
    if (s.mscale) j["mscale"] = *s.mscale;
    if (s.mscale_all_dim) j["mscale_all_dim"] = *s.mscale_all_dim;
    j["beta_fast"] = s.beta_fast;
    j["beta_slow"] = s.beta_slow;
    if (!s.truncate) j["truncate"] = false;
  }
  return j;
}

RopeFrequencies ComputeRopeFrequencies(int head_dim, double rope_theta, int max_position_embeddings,
                                       const std::optional<RopeScaling>& scaling) {
  RopeFrequencies out;
  if (!scaling) {
    out.inv_freq = DefaultInverseFrequencies(head_dim, rope_theta);
    return out;
  }
  const RopeScaling& s = *scaling;
  const float factor = static_cast<float>(s.factor);
  switch (s.type) {
    case RopeScaling::Type::kLinear: {
      out.inv_freq = DefaultInverseFrequencies(head_dim, rope_theta);
      for (float& f : out.inv_freq) f /= factor;
      break;
    }
    case RopeScaling::Type::kDynamic: {
      // transformers' NTK base for a sequence of max_position_embeddings × factor positions.
      const double seq_len = static_cast<double>(max_position_embeddings) * s.factor;
      const double base =
          rope_theta * std::pow(s.factor * seq_len / max_position_embeddings - (s.factor - 1),
                                static_cast<double>(head_dim) / (head_dim - 2));
      out.inv_freq = DefaultInverseFrequencies(head_dim, base);
      break;
    }
    case RopeScaling::Type::kYarn: {
      const int original = s.original_max_position_embeddings > 0
                               ? s.original_max_position_embeddings
                               : max_position_embeddings;
      if (s.attention_factor) {
        out.attention_scaling = static_cast<float>(*s.attention_factor);
      } else if (s.mscale && s.mscale_all_dim && *s.mscale != 0 && *s.mscale_all_dim != 0) {
        out.attention_scaling = static_cast<float>(YarnMscale(s.factor, *s.mscale) /
                                                   YarnMscale(s.factor, *s.mscale_all_dim));
      } else {
        out.attention_scaling = static_cast<float>(YarnMscale(s.factor, 1));
      }
      double low = YarnCorrectionDim(s.beta_fast, head_dim, rope_theta, original);
      double high = YarnCorrectionDim(s.beta_slow, head_dim, rope_theta, original);
      if (s.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(head_dim - 1));
      if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
      const float ramp_low = static_cast<float>(low), ramp_width = static_cast<float>(high - low);
      out.inv_freq.resize(head_dim / 2);
      for (int i = 0; i < head_dim / 2; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
        const float pos_freq = std::pow(static_cast<float>(rope_theta), exponent);
        const float extrapolation = 1.0f / pos_freq;
        const float interpolation = 1.0f / (factor * pos_freq);
        const float ramp = std::clamp((static_cast<float>(i) - ramp_low) / ramp_width, 0.0f, 1.0f);
        const float extrapolation_weight = 1.0f - ramp;
        out.inv_freq[i] =
            interpolation * (1.0f - extrapolation_weight) + extrapolation * extrapolation_weight;
      }
      break;
    }
    case RopeScaling::Type::kLlama3: {
      out.inv_freq = DefaultInverseFrequencies(head_dim, rope_theta);
      const double old_context = s.original_max_position_embeddings;
      const float low_wavelen = static_cast<float>(old_context / s.low_freq_factor);
      const float high_wavelen = static_cast<float>(old_context / s.high_freq_factor);
      const float two_pi = static_cast<float>(2 * std::numbers::pi);
      const float low_factor = static_cast<float>(s.low_freq_factor);
      const float width = static_cast<float>(s.high_freq_factor - s.low_freq_factor);
      for (float& f : out.inv_freq) {
        const float wavelen = two_pi / f;
        const float scaled = wavelen > low_wavelen ? f / factor : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
          const float smooth = (static_cast<float>(old_context) / wavelen - low_factor) / width;
          f = (1.0f - smooth) * scaled / factor + smooth * scaled;
        } else {
          f = scaled;
        }
      }
      break;
    }
  }
  return out;
}

}  // namespace bitserve
