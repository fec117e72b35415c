#include "runtime/pipeline_stage.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace bitserve {

absl::Status PipelineStage::Validate(int num_layers) const {
  if (num_stages < 1 || stage < 0 || stage >= num_stages) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline stage ", stage, " of ", num_stages, ": need 0 <= stage < num_stages"));
  }
  const int e = end(num_layers);
  if (layer_begin < 0 || e > num_layers || layer_begin >= e) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline stage ", stage, ": layers [", layer_begin,
                                                   ", ", e, ") are not a non-empty range of the ",
                                                   num_layers, " layers"));
  }
  if (first() && layer_begin != 0) {
    return absl::InvalidArgumentError("pipeline stage 0 must start at layer 0");
  }
  if (last() && e != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("the last pipeline stage must end at layer ", num_layers, ", not ", e));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PipelineStage>> BalanceStages(const ModelConfig& c, int num_stages) {
  const int n = c.num_hidden_layers;
  if (num_stages < 1 || num_stages > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline stages must be in [1, ", n, "] (the model has ", n, " layers), got ",
                     num_stages));
  }
  // Bytes read per decode step: a layer's ternary weights at 2 bits, the LM head in bf16.
  const double h = c.hidden_size;
  const double ffn = c.is_moe() ? static_cast<double>(c.num_experts_per_tok) * c.moe_intermediate_size
                                : static_cast<double>(c.intermediate_size);
  const double layer = (h * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * h + 3.0 * h * ffn) / 4.0;
  const double head = 2.0 * h * c.vocab_size;
  // Stage s ends after the layer where the running cost passes (s + 1) / S of the total, keeping
  // at least one layer per stage.
  const double total = n * layer + head;
  std::vector<PipelineStage> stages(num_stages);
  int begin = 0;
  for (int s = 0; s < num_stages; ++s) {
    PipelineStage& st = stages[s];
    st.stage = s;
    st.num_stages = num_stages;
    st.layer_begin = begin;
    if (s == num_stages - 1) {
      st.layer_end = n;
    } else {
      const double target = total * (s + 1) / num_stages;
      int end = begin + 1;
      // Take the next layer while that brings the cost closer to the target.
      while (end < n - (num_stages - 1 - s) &&
             std::abs((end + 1) * layer - target) <= std::abs(end * layer - target)) {
        ++end;
      }
      st.layer_end = end;
    }
    begin = st.layer_end;
  }
  return stages;
}

absl::StatusOr<TransferDtype> ParseTransferDtype(absl::string_view name) {
  if (name == "int8") return TransferDtype::kInt8;
  if (name == "bf16") return TransferDtype::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("pipeline transfer dtype must be int8 or bf16, got \"", name, "\""));
}

std::string TransferDtypeName(TransferDtype dtype) { return dtype == TransferDtype::kInt8 ? "int8" : "bf16"; }

int64_t TransferBytes(TransferDtype dtype, int64_t tokens, int64_t hidden) {
  return dtype == TransferDtype::kInt8 ? tokens * (4 + hidden) : tokens * hidden * 2;
}

namespace {

uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float FromBf16(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

void EncodeHidden(TransferDtype dtype, const float* x, int64_t tokens, int64_t hidden, uint8_t* out) {
  if (dtype == TransferDtype::kBf16) {
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      const uint16_t b = ToBf16(x[i]);
      std::memcpy(out + 2 * i, &b, 2);
    }
    return;
  }
  int8_t* q = reinterpret_cast<int8_t*>(out + 4 * tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * hidden;
    float amax = 0;
    for (int64_t i = 0; i < hidden; ++i) amax = std::max(amax, std::abs(row[i]));
    const float scale = amax / 127.0f;
    std::memcpy(out + 4 * t, &scale, 4);
    const float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < hidden; ++i) {
      q[t * hidden + i] = static_cast<int8_t>(std::clamp(std::nearbyint(row[i] * inv), -127.0f, 127.0f));
    }
  }
}

void DecodeHidden(TransferDtype dtype, const uint8_t* in, int64_t tokens, int64_t hidden, float* x) {
  if (dtype == TransferDtype::kBf16) {
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      uint16_t b;
      std::memcpy(&b, in + 2 * i, 2);
      x[i] = FromBf16(b);
    }
    return;
  }
  const int8_t* q = reinterpret_cast<const int8_t*>(in + 4 * tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    float scale;
    std::memcpy(&scale, in + 4 * t, 4);
    for (int64_t i = 0; i < hidden; ++i) x[t * hidden + i] = q[t * hidden + i] * scale;
  }
}

}  // namespace bitserve
