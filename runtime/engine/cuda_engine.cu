// CudaEngine: runtime/engine.h on one GPU. One step:
//   1. ValidateBatch, then the batch's metadata (token ids, positions, entries, block tables, the
//      rows that want logits) into pinned host buffers and one async copy each into fixed device
//      buffers (fixed, so that a captured graph reads the next step's metadata from them);
//   2. the layers (RunLayers: RunDecoderLayers over the blocks of LayerRun, decoder_layer.h):
//      embedding, then per layer
//        fused q/k/v product (int32) -> epilogue + RoPE -> [Hadamard rotation of q and k:
//        EngineOptions::kv_rotation, the default for int8 / int4] -> WritePagedKv (one kernel
//        with the epilogue for an unrotated bf16 cache) -> PagedAttention ->
//        attn_sub_norm + quant -> o product -> residual + post-norm + quant -> fused gate/up
//        product (int32) -> epilogue + relu^2 * up + ffn_sub_norm + quant -> down product ->
//        residual + next layer's input norm + quant
//      (an MoE layer's feed-forward block is kernels/cuda/moe/moe_ffn.cuh's MoeFeedForward on the
//      post-attention norm's float and quantized outputs), and the final norm + bf16 LM head for
//      the rows that want logits;
//   3. logits to the host (Forward) or GpuSampler (Step), which returns only tokens and logprobs.
// Decode steps (every entry one token wanting logits) are padded to a batch bucket and run with
// the attention bounds of a context bucket; each (batch, context) bucket is captured as a CUDA
// graph after one plain run, then replayed. Padding rows compute on token 0 at position 0 and are
// ignored: attention and WritePagedKv read the true counts from the device.
// A pipeline stage (EngineOptions::stage) holds only its layers and their KV cache: a stage after
// the first starts from the previous stage's hidden states (decoded from the transfer format of
// kernels/hidden_transfer.h, in graphs too) instead of the embedding, and a stage before the last
// ends by encoding its residual stream for the next stage instead of the LM head. StageIo brings
// the message from host memory, or finds it already in the engine's device input buffer
// (on_device: NCCL received it there, rpc/worker.cc).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/device_name.h"
#include "base/status_macros.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention/hadamard_rotate.cuh"
#include "kernels/cuda/attention/paged_attention.cuh"
#include "kernels/cuda/attention/qkv_rope.cuh"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/common/device_buffer.cuh"
#include "kernels/cuda/common/pinned_buffer.cuh"
#include "kernels/cuda/head/embedding.cuh"
#include "kernels/cuda/head/lm_head.cuh"
#include "kernels/cuda/head/sampling.cuh"
#include "kernels/cuda/moe/moe_ffn.cuh"
#include "kernels/cuda/norm/act_quant.cuh"
#include "kernels/cuda/norm/gated_ffn.cuh"
#include "kernels/cuda/norm/residual_norm.cuh"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_gemv.cuh"
#include "kernels/cuda/transfer/hidden_transfer.cuh"
#include "runtime/engine/cuda_engine.h"
#include "runtime/engine/cuda_engine_class.cuh"
#include "runtime/engine/cuda_model.cuh"
#include "runtime/engine/decoder_layer.h"

namespace bitserve {
namespace {

using cuda::DeviceBuffer;
using cuda::PinnedBuffer;

constexpr int kDecodeBuckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
// Rows of logits per LM-head pass (a decode bucket fits in one): 128 MB at a 128K vocabulary.
constexpr int kLogitsChunk = 256;
constexpr int kMinContextBucket = 256;

}  // namespace

CudaEngine::~CudaEngine() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::StatusOr<std::unique_ptr<CudaEngine>> CudaEngine::Load(
    const std::filesystem::path& model_dir, const EngineOptions& options,
    const CudaEngineOptions& cuda_options) {
  ASSIGN_OR_RETURN(const int device, CudaDeviceIndex(options.device));
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device >= count) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("device ", options.device, ": ", count, " CUDA device(s) visible"));
  }
  if (options.block_size < 1 || options.block_size > 4096 ||
      (options.block_size & (options.block_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be a power of two in [1, 4096], got ", options.block_size));
  }
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_tokens must be >= 1, got ", options.max_batch_tokens));
  }
  if (options.num_kv_blocks < 0 || options.max_model_len < 0 ||
      !(options.kv_memory_fraction > 0 && options.kv_memory_fraction < 1)) {
    return absl::InvalidArgumentError(
        "num_kv_blocks and max_model_len must be >= 0, kv_memory_fraction in (0, 1)");
  }
  const KvDtype kv_dtype = options.kv_dtype.value_or(DefaultKvDtype(options.device));
  RETURN_IF_ERROR(CheckKvDtype(options.device, kv_dtype));
  RETURN_IF_ERROR(CheckKvRotation(options.kv_rotation));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  ASSIGN_OR_RETURN(const ModelConfig config, LoadModelConfig(model_dir));
  RETURN_IF_ERROR(options.stage.Validate(config.num_hidden_layers));
  std::unique_ptr<CudaEngine> engine(new CudaEngine);
  engine->device_ = device;
  RETURN_IF_ERROR(engine->Init(model_dir, options, cuda_options));
  return engine;
}

absl::Status CudaEngine::Init(const std::filesystem::path& model_dir, const EngineOptions& options,
                              const CudaEngineOptions& cuda_options) {
  ASSIGN_OR_RETURN(const ModelConfig c, LoadModelConfig(model_dir));
  // The dense FFN products: every layer's in a dense model, the shared expert's in an MoE model.
  const int h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int inter = c.is_moe() ? c.shared_expert_intermediate_size : c.intermediate_size;
  if (h % 4 != 0 || inter % 4 != 0 || qd % 4 != 0 || c.moe_intermediate_size % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CUDA engine needs hidden_size, intermediate_size, q_dim and "
                     "moe_intermediate_size multiples of 4, got ",
                     h, ", ", inter, ", ", qd, ", ", c.moe_intermediate_size));
  }
  if (c.is_moe() && c.num_experts > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA engine routes over at most 1024 experts, the model has ", c.num_experts));
  }
  cudaDeviceProp prop{};
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device_));
  device_name_ = absl::StrCat("cuda:", device_, " (", prop.name, ")");
  block_size_ = options.block_size;
  kv_dtype_ = options.kv_dtype.value_or(KvDtype::kBf16);
  kv_rotation_ = options.kv_rotation.value_or(DefaultKvRotation(kv_dtype_));
  lm_head_dtype_ = options.lm_head_dtype;
  max_batch_tokens_ = options.max_batch_tokens;
  max_model_len_ = options.max_model_len > 0 ? options.max_model_len : c.context_length();
  max_blocks_per_seq_ = static_cast<int>((max_model_len_ + block_size_ - 1) / block_size_);
  use_graphs_ = cuda_options.cuda_graphs;
  transfer_ = options.pp_transfer;
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));

  const RopeFrequencies rope = ModelRopeFrequencies(c);
  std::vector<int32_t> held;  // an expert-parallel rank's routed experts
  if (options.expert_exchange != nullptr) {
    ASSIGN_OR_RETURN(held, ExpertsOfRank(c, options));
    use_graphs_ = false;
  }
  if (options.load_format == LoadFormat::kDummy) {
    ASSIGN_OR_RETURN(
        w_, MakeDummyCudaModelWeights(c, options.stage, /*seed=*/0, static_cast<int>(held.size())));
  } else {
    ASSIGN_OR_RETURN(w_, LoadCudaModelWeights(model_dir, options.stage, held));
  }
  const PipelineStage& stage = w_.stage;
  const int num_layers = stage.layer_end - stage.layer_begin;
  footprint_.ternary_weight_bytes = w_.ternary_bytes;
  footprint_.expert_weight_bytes = w_.expert_bytes;
  footprint_.norm_bytes = w_.norm_bytes;
  footprint_.lm_head_bytes = stage.last() ? int64_t{2} * c.vocab_size * h : 0;
  if (stage.last() && lm_head_dtype_ == LmHeadDtype::kInt8) {
    // Quantized once here, on the device, from the bf16 head (the checkpoint's or the dummy's);
    // the bf16 copy is then released, unless it is the embedding table of a first stage.
    ASSIGN_OR_RETURN(lm_head_int8_,
                     cuda::QuantizeLmHeadInt8(w_.lm_head_data(), c.vocab_size, h, nullptr));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    w_.lm_head = {};
    if (!stage.first()) w_.embedding = {};
    footprint_.lm_head_bytes = lm_head_int8_.bytes();
  }

  // Scratch, all of it now: a step allocates nothing.
  const int64_t m = max_batch_tokens_;
  const int64_t widest = std::max({h, inter, qd});
  act_stride_ = cuda::PaddedInputs(widest);
  RETURN_IF_ERROR(Alloc(&x_, m * h));
  RETURN_IF_ERROR(Alloc(&y_, m * h));
  RETURN_IF_ERROR(Alloc(&q_, m * qd));
  RETURN_IF_ERROR(Alloc(&k_, m * kvd));
  RETURN_IF_ERROR(Alloc(&v_, m * kvd));
  RETURN_IF_ERROR(Alloc(&attn_, m * qd));
  RETURN_IF_ERROR(Alloc(&acc_qkv_, m * (qd + 2 * kvd)));
  RETURN_IF_ERROR(Alloc(&acc_gate_up_, m * 2 * inter));
  for (int i = 0; i < 2; ++i) {
    RETURN_IF_ERROR(Alloc(&act_values_[i], m * act_stride_));
    RETURN_IF_ERROR(Alloc(&act_scales_[i], m));
    RETURN_IF_ERROR(Alloc(&act_sums_[i], m));
  }
  if (c.is_moe()) {
    moe_shape_ = LayerMoeShape(c);
    RETURN_IF_ERROR(Alloc(&moe_in_, m * h));
    auto scratch = [&]() -> absl::StatusOr<cuda::MoeFfnScratch> {
      return cuda::MoeFfnScratch::Create(moe_shape_, c.moe_intermediate_size, inter, m);
    };
    ASSIGN_OR_RETURN(cuda::MoeFfnScratch s, scratch());
    moe_scratch_.emplace(std::move(s));
    if (options.expert_exchange != nullptr) RETURN_IF_ERROR(InitExpertParallel(options, held));
  }
  const int64_t chunk = std::min<int64_t>(kLogitsChunk, m);
  if (stage.last()) {
    RETURN_IF_ERROR(Alloc(&logits_, chunk * c.vocab_size));
    if (lm_head_dtype_ == LmHeadDtype::kInt8) {
      RETURN_IF_ERROR(Alloc(&lm_in_int8_, chunk * cuda::Int8LmHeadStride(h)));
      RETURN_IF_ERROR(Alloc(&lm_in_scales_, chunk));
    } else {
      RETURN_IF_ERROR(Alloc(&lm_in_, chunk * h));
    }
  }
  if (!stage.first()) RETURN_IF_ERROR(Alloc(&stage_in_, TransferBytes(transfer_, m, h)));
  if (!stage.last()) RETURN_IF_ERROR(Alloc(&stage_out_, TransferBytes(transfer_, m, h)));
  const std::vector<float> table =
      cuda::RopeCosSinTable(rope.inv_freq, max_model_len_, rope.attention_scaling);
  RETURN_IF_ERROR(Alloc(&cos_sin_, static_cast<int64_t>(table.size())));
  RETURN_IF_ERROR(cos_sin_.CopyFromHost(table.data(), static_cast<int64_t>(table.size())));
  const size_t attn_bytes = cuda::PagedAttentionWorkspaceBytes(
      static_cast<int>(m), c.num_attention_heads, c.head_dim, static_cast<int>(max_model_len_));
  RETURN_IF_ERROR(Alloc(&attn_workspace_, static_cast<int64_t>(attn_bytes)));
  {
    const int64_t max_rows = std::max<int64_t>({qd + 2 * kvd, 2 * inter, h});
    ASSIGN_OR_RETURN(gemm_, cuda::TernaryGemm::Create(max_rows, widest, m));
  }
  if (stage.last()) {
    if (lm_head_dtype_ == LmHeadDtype::kInt8) {
      ASSIGN_OR_RETURN(int8_lm_head_, cuda::Int8LmHead::Create(c.vocab_size, chunk));
    } else {
      ASSIGN_OR_RETURN(lm_head_, cuda::Bf16LmHead::Create(stream_));
    }
    ASSIGN_OR_RETURN(sampler_, cuda::GpuSampler::Create(chunk, c.vocab_size));
  }
  const int64_t tables = m * max_blocks_per_seq_;
  for (auto [host, dev, n] : {std::tuple{&host_.tokens, &dev_.tokens, m},
                              {&host_.positions, &dev_.positions, m},
                              {&host_.token_entry, &dev_.token_entry, m},
                              {&host_.token_begin, &dev_.token_begin, m + 1},
                              {&host_.start, &dev_.start, m},
                              {&host_.logit_rows, &dev_.logit_rows, m},
                              {&host_.block_tables, &dev_.block_tables, tables},
                              {&host_.counts, &dev_.counts, int64_t{2}}}) {
    RETURN_IF_ERROR(Alloc(host, n));
    RETURN_IF_ERROR(Alloc(dev, n));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());

  // The KV cache takes what is left; its bytes per position depend on the dtype (int8 about half
  // of bf16, int4 about a quarter, plus 2 or 4 bytes of params per token and KV head).
  const int64_t position_bytes =
      cuda::PagedKvBytesPerPosition(kv_dtype_, c.num_key_value_heads, c.head_dim);
  const int64_t block_bytes = position_bytes * block_size_ * num_layers;
  constexpr int64_t kPlaneAlign = 256;
  const int64_t padding = kPlaneAlign * 4 * num_layers;
  footprint_.kv_bytes_per_position = position_bytes * num_layers;
  num_kv_blocks_ = options.num_kv_blocks;
  if (num_kv_blocks_ == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    num_kv_blocks_ = static_cast<int>(std::min<int64_t>(
        (static_cast<int64_t>(static_cast<double>(free_bytes) * options.kv_memory_fraction) -
         padding) /
            block_bytes,
        0x7fffffff));
    if (num_kv_blocks_ < 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("no device memory left for the KV cache: ", free_bytes,
                       " bytes free, a block needs ", block_bytes));
    }
  }
  const auto padded = [](int64_t bytes) {
    return (bytes + kPlaneAlign - 1) / kPlaneAlign * kPlaneAlign;
  };
  const int64_t rows = int64_t{num_kv_blocks_} * block_size_ * c.num_key_value_heads;
  const int64_t data_plane = padded(rows * KvHeadBytes(kv_dtype_, c.head_dim));
  const int64_t params_plane = padded(rows * KvParamHalves(kv_dtype_) * 2);
  const int64_t layer_bytes = 2 * data_plane + 2 * params_plane;
  RETURN_IF_ERROR(Alloc(&kv_, layer_bytes * num_layers));
  footprint_.kv_cache_bytes = layer_bytes * num_layers;
  for (int l = 0; l < num_layers; ++l) {
    uint8_t* base = kv_.get() + l * layer_bytes;
    cuda::PagedKvLayer layer;
    layer.k = base;
    layer.v = base + data_plane;
    layer.dtype = kv_dtype_;
    if (params_plane > 0) {
      layer.k_params = reinterpret_cast<uint16_t*>(base + 2 * data_plane);
      layer.v_params = reinterpret_cast<uint16_t*>(base + 2 * data_plane + params_plane);
    }
    layer.num_blocks = num_kv_blocks_;
    layer.block_size = block_size_;
    layer.num_kv_heads = c.num_key_value_heads;
    layer.head_dim = c.head_dim;
    kv_layers_.push_back(layer);
  }
  footprint_.scratch_bytes +=
      x_.bytes() + y_.bytes() + q_.bytes() + k_.bytes() + v_.bytes() + attn_.bytes() +
      acc_qkv_.bytes() + acc_gate_up_.bytes() + 2 * act_values_[0].bytes() + logits_.bytes() +
      lm_in_.bytes() + attn_workspace_.bytes() + gemm_->scratch_bytes() + stage_in_.bytes() +
      stage_out_.bytes() + moe_in_.bytes() + (moe_scratch_ ? moe_scratch_->bytes() : 0) +
      lm_in_int8_.bytes() + lm_in_scales_.bytes() +
      (int8_lm_head_ ? int8_lm_head_->scratch_bytes() : 0);
  return absl::OkStatus();
}

absl::Status CudaEngine::UploadBatch(std::span<const BatchEntry> entries,
                                     const std::vector<int32_t>& logit_rows, int padded_tokens) {
  int32_t t = 0;
  for (size_t e = 0; e < entries.size(); ++e) {
    const BatchEntry& entry = entries[e];
    host_.token_begin[e] = t;
    host_.start[e] = entry.start_position;
    for (size_t i = 0; i < entry.tokens.size(); ++i, ++t) {
      host_.tokens[t] = entry.tokens[i];
      host_.positions[t] = entry.start_position + static_cast<int32_t>(i);
      host_.token_entry[t] = static_cast<int32_t>(e);
    }
    const int64_t used =
        std::min<int64_t>(static_cast<int64_t>(entry.block_table.size()), max_blocks_per_seq_);
    std::copy_n(entry.block_table.data(), used,
                host_.block_tables.get() + static_cast<int64_t>(e) * max_blocks_per_seq_);
  }
  const int entries_n = static_cast<int>(entries.size());
  host_.token_begin[entries_n] = t;
  const int tokens_n = t;
  // Padding rows: token 0 at position 0 of entry 0, never written to the cache.
  for (int p = tokens_n; p < padded_tokens; ++p) {
    host_.tokens[p] = 0;
    host_.positions[p] = 0;
    host_.token_entry[p] = 0;
  }
  const int rows = static_cast<int>(logit_rows.size());
  std::copy(logit_rows.begin(), logit_rows.end(), host_.logit_rows.get());
  for (int r = rows; r < std::max(rows, padded_tokens); ++r) host_.logit_rows[r] = r;
  host_.counts[0] = entries_n;
  host_.counts[1] = tokens_n;
  const int n = std::max(tokens_n, padded_tokens);
  const auto copy = [&](const PinnedBuffer<int32_t>& from, const DeviceBuffer<int32_t>& to,
                        int64_t count) -> absl::Status {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(to.get(), from.get(), count * sizeof(int32_t),
                                                  cudaMemcpyHostToDevice, stream_));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(copy(host_.tokens, dev_.tokens, n));
  RETURN_IF_ERROR(copy(host_.positions, dev_.positions, n));
  RETURN_IF_ERROR(copy(host_.token_entry, dev_.token_entry, n));
  RETURN_IF_ERROR(copy(host_.token_begin, dev_.token_begin, entries_n + 1));
  RETURN_IF_ERROR(copy(host_.start, dev_.start, entries_n));
  RETURN_IF_ERROR(copy(host_.logit_rows, dev_.logit_rows, std::max(rows, padded_tokens)));
  RETURN_IF_ERROR(copy(host_.block_tables, dev_.block_tables,
                       static_cast<int64_t>(entries_n) * max_blocks_per_seq_));
  RETURN_IF_ERROR(copy(host_.counts, dev_.counts, 2));
  return absl::OkStatus();
}

absl::Status CudaEngine::LmHead(int row_begin, int rows, cudaStream_t stream) {
  const ModelConfig& c = config();
  if (lm_head_dtype_ == LmHeadDtype::kInt8) {
    const int64_t stride = cuda::Int8LmHeadStride(c.hidden_size);
    const cuda::Int8ActivationsOut out{lm_in_int8_.get(), lm_in_scales_.get(), nullptr, stride};
    RETURN_IF_ERROR(cuda::RmsNormQuantizeRows(
        x_.get(), dev_.logit_rows.get() + row_begin, rows, c.hidden_size, w_.final_norm.get(),
        static_cast<float>(c.rms_norm_eps), out, nullptr, stream));
    return int8_lm_head_->Run(lm_head_int8_, cuda::Int8Activations(out, rows, c.hidden_size),
                              logits_.get(), stream);
  }
  RETURN_IF_ERROR(cuda::RmsNormToBf16(
      x_.get(), dev_.logit_rows.get() + row_begin, rows, c.hidden_size, w_.final_norm.get(),
      static_cast<float>(c.rms_norm_eps), lm_in_.get(), nullptr, stream));
  return lm_head_->Run(w_.lm_head_data(), c.vocab_size, c.hidden_size, lm_in_.get(), rows,
                       logits_.get(), stream);
}

// The decoder blocks (decoder_layer.h) of one run of the stage's layers, as CUDA kernels. Each
// block ends by adding its output into x_ and computing the next block's normed, quantized input in
// act_out[0] in the same kernel: the post-attention norm after Attention, the next layer's input
// norm after the feed-forward block (nothing after the stage's last layer).
class CudaEngine::LayerRun final : public DecoderBlocks {
 public:
  LayerRun(CudaEngine& e, const RunShape& shape)
      : e_(e),
        c_(e.config()),
        m_(shape.tokens),
        h_(c_.hidden_size),
        inter_(c_.intermediate_size),
        qd_(c_.q_dim()),
        eps_(static_cast<float>(c_.rms_norm_eps)),
        scale_(static_cast<float>(1.0 / std::sqrt(double{1.0} * c_.head_dim))),
        s_(e.stream_),
        act_out_{
            {e.act_values_[0].get(), e.act_scales_[0].get(), e.act_sums_[0].get(), e.act_stride_},
            {e.act_values_[1].get(), e.act_scales_[1].get(), e.act_sums_[1].get(), e.act_stride_}},
        qkv_shape_{c_.num_attention_heads, c_.num_key_value_heads, c_.head_dim} {
    batch_.num_entries = shape.entries;
    batch_.num_tokens = static_cast<int>(m_);
    batch_.token_begin = e.dev_.token_begin.get();
    batch_.start_position = e.dev_.start.get();
    batch_.token_entry = e.dev_.token_entry.get();
    batch_.block_tables = e.dev_.block_tables.get();
    batch_.max_blocks_per_seq = e.max_blocks_per_seq_;
    batch_.max_context = shape.max_context;
    batch_.device_num_entries = e.dev_.counts.get();
    batch_.device_num_tokens = e.dev_.counts.get() + 1;
    batch_.max_prefill_tokens = shape.max_prefill_tokens;
  }

  // x_ holds the stage's input; act_out[0] gets its first layer's normed, quantized input.
  absl::Status Begin() {
    return cuda::RmsNormQuantizeActivations(e_.x_.get(), e_.w_.layers[0].input_norm.get(), m_, h_,
                                            eps_, act_out_[0], nullptr, s_);
  }

  absl::Status Attention(int layer) override {
    const int l = Local(layer);
    const CudaLayerWeights& w = e_.w_.layers[l];
    const cuda::PagedKvLayer& kv = e_.kv_layers_[l];
    RETURN_IF_ERROR(cuda::TernaryMatmulInt32(e_.gemm_.get(), w.qkv.view(),
                                             cuda::Int8Activations(act_out_[0], m_, h_),
                                             e_.acc_qkv_.get(), s_));
    if (kv.dtype == KvDtype::kBf16 && e_.kv_rotation_ == KvRotation::kNone) {
      // One kernel instead of two (a rotated bf16 cache, asked for explicitly, takes the path
      // below: the rotation needs the float k between the epilogue and the cache write).
      RETURN_IF_ERROR(cuda::QkvEpilogueRopeWriteBf16Kv(
          e_.acc_qkv_.get(), e_.act_scales_[0].get(), w.q_scale, w.k_scale, w.v_scale, qkv_shape_,
          e_.dev_.positions.get(), e_.cos_sin_.get(), e_.max_model_len_, e_.q_.get(), batch_, kv,
          s_));
    } else {
      RETURN_IF_ERROR(cuda::QkvEpilogueRope(
          e_.acc_qkv_.get(), e_.act_scales_[0].get(), w.q_scale, w.k_scale, w.v_scale, m_,
          qkv_shape_, e_.dev_.positions.get(), e_.cos_sin_.get(), e_.max_model_len_, e_.q_.get(),
          e_.k_.get(), e_.v_.get(), s_));
      if (e_.kv_rotation_ == KvRotation::kHadamard) {
        // After RoPE, before k is cached and q reads it: kernels/cpu/hadamard.h, bit for bit.
        RETURN_IF_ERROR(cuda::HadamardRotateQk(e_.q_.get(), e_.k_.get(), c_.num_attention_heads,
                                               c_.num_key_value_heads, c_.head_dim, batch_, s_));
      }
      RETURN_IF_ERROR(cuda::WritePagedKv(e_.k_.get(), e_.v_.get(), batch_, kv, s_));
    }
    RETURN_IF_ERROR(cuda::PagedAttention(e_.q_.get(), batch_, kv, c_.num_attention_heads, scale_,
                                         e_.attn_.get(), e_.attn_workspace_.get(),
                                         static_cast<size_t>(e_.attn_workspace_.bytes()), s_));
    RETURN_IF_ERROR(cuda::RmsNormQuantizeActivations(e_.attn_.get(), w.attn_sub_norm.get(), m_, qd_,
                                                     eps_, act_out_[1], nullptr, s_));
    RETURN_IF_ERROR(cuda::TernaryMatmul(
        e_.gemm_.get(), w.o.view(), cuda::Int8Activations(act_out_[1], m_, qd_), e_.y_.get(), s_));
    // An MoE block's router reads the float norm output too.
    float* normed = w.moe ? e_.moe_in_.get() : nullptr;
    return cuda::AddRmsNormQuantize(e_.x_.get(), e_.y_.get(), w.post_attention_norm.get(), m_, h_,
                                    eps_, act_out_[0], normed, s_);
  }

  absl::Status DenseFfn(int layer) override {
    const int l = Local(layer);
    const CudaLayerWeights& w = e_.w_.layers[l];
    RETURN_IF_ERROR(cuda::TernaryMatmulInt32(e_.gemm_.get(), w.gate_up.view(),
                                             cuda::Int8Activations(act_out_[0], m_, h_),
                                             e_.acc_gate_up_.get(), s_));
    RETURN_IF_ERROR(cuda::GateUpRelu2NormQuantize(
        e_.acc_gate_up_.get(), e_.act_scales_[0].get(), w.gate_scale, w.up_scale, m_, inter_,
        w.ffn_sub_norm.get(), eps_, act_out_[1], nullptr, s_));
    RETURN_IF_ERROR(cuda::TernaryMatmul(e_.gemm_.get(), w.down.view(),
                                        cuda::Int8Activations(act_out_[1], m_, inter_), e_.y_.get(),
                                        s_));
    return EndLayer(l);
  }

  absl::Status MoeFfn(int layer) override {
    const int l = Local(layer);
    const CudaLayerWeights& w = e_.w_.layers[l];
    if (!w.moe) return absl::InternalError(absl::StrCat("layer ", layer, " has no MoE weights"));
    if (e_.expert_exchange_ != nullptr) {
      RETURN_IF_ERROR(e_.ExpertParallelMoe(
          layer, e_.moe_in_.get(), cuda::Int8Activations(act_out_[0], m_, h_), e_.y_.get()));
      return EndLayer(l);
    }
    RETURN_IF_ERROR(cuda::MoeFeedForward(w.moe->view(), e_.moe_shape_, e_.moe_in_.get(),
                                         cuda::Int8Activations(act_out_[0], m_, h_), e_.y_.get(),
                                         *e_.moe_scratch_, e_.gemm_.get(), s_));
    return EndLayer(l);
  }

 private:
  int Local(int layer) const { return layer - e_.w_.stage.layer_begin; }

  // x_ += y_ (the feed-forward block's output), with the next layer's normed, quantized input.
  absl::Status EndLayer(int l) {
    if (l + 1 < static_cast<int>(e_.w_.layers.size())) {
      return cuda::AddRmsNormQuantize(e_.x_.get(), e_.y_.get(),
                                      e_.w_.layers[l + 1].input_norm.get(), m_, h_, eps_,
                                      act_out_[0], nullptr, s_);
    }
    return cuda::AddResidual(e_.x_.get(), e_.y_.get(), m_ * h_, s_);
  }

  CudaEngine& e_;
  const ModelConfig& c_;
  const int64_t m_;
  const int h_, inter_, qd_;
  const float eps_, scale_;
  cudaStream_t s_;
  const cuda::Int8ActivationsOut act_out_[2];
  const cuda::QkvShape qkv_shape_;
  cuda::AttentionBatch batch_;
};

absl::Status CudaEngine::RunLayers(const RunShape& shape) {
  const int64_t m = shape.tokens;
  const int h = config().hidden_size;
  cudaStream_t s = stream_;
  // The step's true token count (a decode bucket pads m) bounds the stage messages.
  const int32_t* true_tokens = dev_.counts.get() + 1;
  if (w_.stage.first()) {
    RETURN_IF_ERROR(
        cuda::EmbeddingLookup(w_.embedding.get(), h, dev_.tokens.get(), m, x_.get(), s));
  } else {
    RETURN_IF_ERROR(cuda::DecodeHidden(transfer_, stage_in_.get(), m, true_tokens, h, x_.get(), s));
  }
  LayerRun run(*this, shape);
  RETURN_IF_ERROR(run.Begin());
  RETURN_IF_ERROR(RunDecoderLayers(run, config(), w_.stage.layer_begin, w_.stage.layer_end));
  if (!w_.stage.last()) {
    return cuda::EncodeHidden(transfer_, x_.get(), m, true_tokens, h, stage_out_.get(), s);
  }
  if (shape.logit_rows > 0) RETURN_IF_ERROR(LmHead(0, std::min(shape.logit_rows, kLogitsChunk), s));
  return absl::OkStatus();
}

namespace {

int DecodeBucket(int entries) {
  for (int b : kDecodeBuckets) {
    if (entries <= b) return b;
  }
  return 0;
}

}  // namespace

absl::Status CudaEngine::Run(std::span<const BatchEntry> entries,
                             const std::vector<int32_t>& logit_rows, bool want_logits_rows) {
  int tokens = 0, max_context = 1, max_prefill = 0;
  bool decode = true;
  for (const BatchEntry& e : entries) {
    const int n = static_cast<int>(e.tokens.size());
    tokens += n;
    max_context = std::max(max_context, e.start_position + n);
    if (n > 1) max_prefill += n;
    decode = decode && n == 1 && e.logits != LogitsWanted::kNone;
  }
  const int entries_n = static_cast<int>(entries.size());
  if (expert_exchange_ != nullptr) {
    std::fill(expert_rows_.begin(), expert_rows_.end(), 0);
    if (entries.empty()) return EmptyExpertParallelStep();
  }
  // Under expert parallelism every step runs unpadded and without graphs.
  const int bucket = decode && expert_exchange_ == nullptr ? DecodeBucket(entries_n) : 0;
  RunShape shape;
  if (bucket > 0) {
    // Decode: the bucket's shape, whether replayed from a graph or launched.
    int context = kMinContextBucket;
    while (context < max_context) context *= 2;
    context = static_cast<int>(std::min<int64_t>(context, max_model_len_));
    shape = {bucket, bucket, want_logits_rows ? bucket : 0, context, 0};
    RETURN_IF_ERROR(UploadBatch(entries, logit_rows, bucket));
    const auto key = std::make_pair(bucket * (want_logits_rows ? 1 : -1), context);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      BITSERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_));
      return absl::OkStatus();
    }
    RETURN_IF_ERROR(RunLayers(shape));
    if (!use_graphs_) return absl::OkStatus();
    // This shape ran once (plans and lazily built state exist): capture it for the next steps.
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    BITSERVE_CUDA_RETURN_IF_ERROR(
        cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const absl::Status captured = RunLayers(shape);
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (!captured.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return captured;
    }
    BITSERVE_CUDA_RETURN_IF_ERROR(end);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    BITSERVE_CUDA_RETURN_IF_ERROR(inst);
    graphs_[key] = exec;
    return absl::OkStatus();
  }
  shape = {tokens, entries_n, want_logits_rows ? static_cast<int>(logit_rows.size()) : 0,
           max_context, max_prefill};
  RETURN_IF_ERROR(UploadBatch(entries, logit_rows, 0));
  return RunLayers(shape);
}

absl::Status CudaEngine::Validate(std::span<const BatchEntry> entries) const {
  if (expert_exchange_ != nullptr && entries.empty()) return absl::OkStatus();
  return ValidateBatch(entries, config(), block_size_, num_kv_blocks_, max_model_len_,
                       max_batch_tokens_);
}

absl::Status CudaEngine::Refuse(absl::Status refused) {
  if (expert_exchange_ != nullptr) {
    std::fill(expert_rows_.begin(), expert_rows_.end(), 0);
    if (absl::Status s = EmptyExpertParallelStep(); !s.ok()) {
      return absl::Status(refused.code(), absl::StrCat(refused.message(), "; then ", s.message()));
    }
  }
  return refused;
}

absl::Status CudaEngine::Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) {
  if (!w_.stage.whole_model()) {
    return absl::FailedPreconditionError(
        "Forward needs the whole model; a pipeline stage runs StageStep");
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  if (absl::Status s = Validate(entries); !s.ok()) return Refuse(s);
  return ComputeLogits(entries, logits);
}

absl::Status CudaEngine::Step(std::span<const BatchEntry> entries,
                              std::span<const SampleSpec> samples,
                              std::vector<SampleResult>* results) {
  if (!w_.stage.whole_model()) {
    return absl::FailedPreconditionError(
        "Step needs the whole model; a pipeline stage runs StageStep");
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  if (absl::Status s = Validate(entries); !s.ok()) return Refuse(s);
  return Sample(entries, samples, results);
}

absl::StatusOr<DeviceStageBuffers> CudaEngine::device_stage_buffers() {
  DeviceStageBuffers b;
  b.device = device_;
  b.input = stage_in_.get();
  b.output = stage_out_.get();
  return b;
}

absl::Status CudaEngine::StageStep(std::span<const BatchEntry> entries,
                                   std::span<const SampleSpec> samples, const StageIo& io,
                                   std::vector<SampleResult>* results) {
  const PipelineStage& stage = w_.stage;
  if (!stage.last() && io.output == nullptr && !io.on_device) {
    return absl::InvalidArgumentError("a stage that is not the last needs an output buffer");
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  if (absl::Status s = Validate(entries); !s.ok()) return Refuse(s);
  int64_t m = 0;
  for (const BatchEntry& e : entries) m += static_cast<int64_t>(e.tokens.size());
  const int64_t h = config().hidden_size;
  const int64_t bytes = TransferBytes(transfer_, m, h);
  if (!stage.first() && !io.on_device) {
    if (static_cast<int64_t>(io.input.size()) != bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("pipeline stage ", stage.stage, ": input of ", io.input.size(), " bytes; ",
                       m, " tokens of ", h, " in ", TransferDtypeName(transfer_), " are ", bytes));
    }
    BITSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(stage_in_.get(), io.input.data(), bytes, cudaMemcpyHostToDevice, stream_));
  }
  if (stage.last()) {
    return io.logits != nullptr ? ComputeLogits(entries, io.logits)
                                : Sample(entries, samples, results);
  }
  RETURN_IF_ERROR(Run(entries, {}, /*want_logits_rows=*/false));
  if (!io.on_device) {
    io.output->resize(static_cast<size_t>(bytes));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(io.output->data(), stage_out_.get(), bytes,
                                                  cudaMemcpyDeviceToHost, stream_));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaEngine::ComputeLogits(std::span<const BatchEntry> entries,
                                       std::vector<float>* logits) {
  std::vector<int32_t> rows;
  int32_t t = 0;
  for (const BatchEntry& e : entries) {
    const int32_t n = static_cast<int32_t>(e.tokens.size());
    if (e.logits == LogitsWanted::kAll) {
      for (int32_t i = 0; i < n; ++i) rows.push_back(t + i);
    } else if (e.logits == LogitsWanted::kLast) {
      rows.push_back(t + n - 1);
    }
    t += n;
  }
  const int64_t vocab = config().vocab_size;
  const int total = static_cast<int>(rows.size());
  logits->resize(static_cast<size_t>(total) * vocab);
  RETURN_IF_ERROR(Run(entries, rows, /*want_logits_rows=*/true));
  for (int r0 = 0; r0 < total; r0 += kLogitsChunk) {
    const int n = std::min(kLogitsChunk, total - r0);
    // RunLayers computed the first chunk (inside the graph for decode steps).
    if (r0 > 0) RETURN_IF_ERROR(LmHead(r0, n, stream_));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data() + r0 * vocab, logits_.get(),
                                                  n * vocab * sizeof(float), cudaMemcpyDeviceToHost,
                                                  stream_));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaEngine::Sample(std::span<const BatchEntry> entries,
                                std::span<const SampleSpec> samples,
                                std::vector<SampleResult>* results) {
  std::vector<int32_t> rows;
  int32_t t = 0;
  for (const BatchEntry& e : entries) {
    t += static_cast<int32_t>(e.tokens.size());
    if (e.logits == LogitsWanted::kLast) rows.push_back(t - 1);
  }
  if (samples.size() != rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Step got ", samples.size(),
                                                   " sample specs for ", rows.size(),
                                                   " entries that want their last logits"));
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    if (samples[i].params == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sample spec ", i, " has no params"));
    }
    RETURN_IF_ERROR(samples[i].params->Validate());
  }
  // Sampled rows only: a kAll entry in a Step gets no LM head at all.
  bool all_sampled = true;
  for (const BatchEntry& e : entries) all_sampled = all_sampled && e.logits == LogitsWanted::kLast;
  std::vector<BatchEntry> adjusted;
  std::span<const BatchEntry> run = entries;
  if (!all_sampled) {
    // A decode graph computes logits for every entry; keep kAll entries out of that shape.
    adjusted.assign(entries.begin(), entries.end());
    for (BatchEntry& e : adjusted) {
      if (e.logits == LogitsWanted::kAll) e.logits = LogitsWanted::kNone;
    }
    run = adjusted;
  }
  RETURN_IF_ERROR(Run(run, rows, /*want_logits_rows=*/true));

  results->assign(samples.size(), SampleResult{});
  std::vector<cuda::SamplingRow> params;
  std::vector<cuda::PenaltyEntry> penalties;
  const int total = static_cast<int>(rows.size());
  for (int r0 = 0; r0 < total; r0 += kLogitsChunk) {
    const int n = std::min(kLogitsChunk, total - r0);
    if (r0 > 0) RETURN_IF_ERROR(LmHead(r0, n, stream_));
    params.clear();
    penalties.clear();
    for (int r = r0; r < r0 + n; ++r) {
      const SampleSpec& spec = samples[r];
      const SamplingParams& p = *spec.params;
      cuda::SamplingRow row;
      row.temperature = p.temperature;
      row.top_k = p.top_k;
      row.top_p = p.top_p;
      row.min_p = p.min_p;
      row.repetition_penalty = p.repetition_penalty;
      row.presence_penalty = p.presence_penalty;
      row.frequency_penalty = p.frequency_penalty;
      row.top_logprobs = p.top_logprobs;
      row.seed = spec.seed;
      row.draw_index = spec.draw_index;
      row.penalty_begin = static_cast<int32_t>(penalties.size());
      const bool repeat = p.repetition_penalty != 1;
      const bool counted = p.frequency_penalty != 0 || p.presence_penalty != 0;
      if (repeat || counted) {
        // Distinct ids with their flags; sampling.cuh's PenaltyEntry.
        std::unordered_map<int32_t, std::pair<int32_t, int32_t>> ids;  // id -> (repeat, count)
        if (repeat) {
          for (int32_t id : spec.prompt) ids[id].first = 1;
        }
        for (int32_t id : spec.output) {
          auto& slot = ids[id];
          if (repeat) slot.first = 1;
          ++slot.second;
        }
        for (const auto& [id, flags] : ids) {
          penalties.push_back({id, flags.first, counted ? flags.second : 0});
        }
      }
      row.penalty_end = static_cast<int32_t>(penalties.size());
      params.push_back(row);
    }
    RETURN_IF_ERROR(sampler_->Sample(logits_.get(), params, penalties, stream_));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    for (int i = 0; i < n; ++i) {
      SampleResult& out = (*results)[r0 + i];
      out.token = sampler_->token(i);
      out.logprob = sampler_->logprob(i);
      for (int k = 0; k < sampler_->top_count(i); ++k) {
        out.top_logprobs.push_back({sampler_->top_token(i, k), sampler_->top_logprob(i, k)});
      }
    }
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> LoadCudaEngine(const std::filesystem::path& model_dir,
                                                       const EngineOptions& options,
                                                       const CudaEngineOptions& cuda_options) {
  ASSIGN_OR_RETURN(std::unique_ptr<CudaEngine> engine,
                   CudaEngine::Load(model_dir, options, cuda_options));
  return std::unique_ptr<Engine>(std::move(engine));
}

absl::StatusOr<std::unique_ptr<Engine>> LoadCudaEngine(const std::filesystem::path& model_dir,
                                                       const EngineOptions& options) {
  return LoadCudaEngine(model_dir, options, CudaEngineOptions{});
}

const CudaEngineFootprint* GetCudaEngineFootprint(const Engine& engine) {
  const auto* cuda_engine = dynamic_cast<const CudaEngine*>(&engine);
  return cuda_engine != nullptr ? &cuda_engine->footprint() : nullptr;
}

}  // namespace bitserve
