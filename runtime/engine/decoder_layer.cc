#include "runtime/engine/decoder_layer.h"

#include "base/status_macros.h"

namespace bitserve {

FfnBlock LayerFfnBlock(const ModelConfig& config, int layer) {
  return config.is_moe() ? FfnBlock::kMoe : FfnBlock::kDense;
}

MoeShape LayerMoeShape(const ModelConfig& config) {
  return {config.hidden_size, config.num_experts, config.num_experts_per_tok, config.norm_topk_prob,
          static_cast<float>(config.rms_norm_eps)};
}

absl::Status RunDecoderLayers(DecoderBlocks& blocks, const ModelConfig& config, int begin,
                              int end) {
  for (int layer = begin; layer < end; ++layer) {
    RETURN_IF_ERROR(blocks.Attention(layer));
    switch (LayerFfnBlock(config, layer)) {
      case FfnBlock::kDense:
        RETURN_IF_ERROR(blocks.DenseFfn(layer));
        break;
      case FfnBlock::kMoe:
        RETURN_IF_ERROR(blocks.MoeFfn(layer));
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace bitserve
