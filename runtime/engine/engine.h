// The model runner every backend implements (CPU reference, CUDA): one forward pass over a batch
// of sequences that each bring new tokens — prefill chunks and single decode tokens alike — with
// their keys and values kept in a paged KV cache whose block tables the caller owns (the
// scheduler, DESIGN.md "KV cache"). Engines keep no per-sequence state: an entry says where its
// tokens go (start_position, block_table) and the cache holds whatever was written there before.
//
// Paged KV cache: num_blocks blocks of block_size token positions, per layer. Position p of a
// sequence lives in block block_table[p / block_size], row p % block_size. Block ids are in
// [0, num_blocks); two sequences never share a block that either writes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/cpu/sampling.h"
#include "kernels/kv_cache_format.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/checkpoint/pipeline_stage.h"
#include "runtime/transport/expert_exchange.h"

namespace bitserve {

// Sees every activation right before it is quantized to int8 (for comparing implementations
// layer by layer): name is "qkv_in", "o_in", "gate_up_in" or "down_in"; x is [rows, dim].
using ActivationTrace = std::function<void(const std::string& name, int layer, const float* x,
                                           int64_t rows, int64_t dim)>;

enum class LoadFormat { kSafetensors, kDummy };
// Element type of the LM head's weights (EngineOptions::lm_head_dtype).
enum class LmHeadDtype { kBf16, kInt8 };
// "bf16" / "int8"; InvalidArgument naming the accepted values otherwise.
absl::StatusOr<LmHeadDtype> ParseLmHeadDtype(absl::string_view name);
const char* LmHeadDtypeName(LmHeadDtype dtype);
// "safetensors" / "dummy"; InvalidArgument naming the accepted values otherwise.
absl::StatusOr<LoadFormat> ParseLoadFormat(absl::string_view name);

struct EngineOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
  int block_size = 16;         // tokens per KV block
  // KV blocks. 0: enough for max_sequences sequences of max_model_len tokens (CPU), or what fits in
  // kv_memory_fraction of the free device memory after weights and scratch (CUDA).
  int num_kv_blocks = 0;
  int max_sequences = 8;            // sizing hint for num_kv_blocks = 0 on CPU
  int64_t max_model_len = 0;        // positions per sequence; 0: the model's context_length()
  int max_batch_tokens = 8192;      // tokens of one Forward/Step; scratch is sized for it at load
  double kv_memory_fraction = 0.9;  // CUDA only
  // Element type of the KV cache (kernels/kv_cache_format.h). Unset: the device's default,
  // DefaultKvDtype(device). CPU: all four (f32 is the reference; the others quantize on write and
  // dequantize on read, for measuring quality); CUDA: bf16, int8, int4.
  std::optional<KvDtype> kv_dtype;
  // q and k rotated per head before the keys are cached (kernels/kv_cache_format.h KvRotation,
  // kernels/cpu/hadamard.h), so that outlier key channels do not set the int8 / int4 scales.
  // Unset: DefaultKvRotation of the cache's dtype (hadamard for int8 / int4, none for f32 / bf16).
  std::optional<KvRotation> kv_rotation;
  // The LM head's weights: bf16 as the checkpoint holds them (default), or int8 with a scale per
  // vocabulary row (kernels/cpu/bf16_matmul.h QuantizeBf16RowsInt8) multiplied by the final-normed
  // row quantized to int8 per token (the activation quantization of the ternary layers), int32
  // sums: half the bytes of a decode step's largest read, at a measured perplexity cost
  // (docs/quality.md). A tied embedding stays bf16 for the lookup. CPU and CUDA, bit-identical.
  LmHeadDtype lm_head_dtype = LmHeadDtype::kBf16;
  ActivationTrace trace;  // optional; CPU only
  // Where the weights come from: the checkpoint (safetensors), or random weights of the config's
  // shapes made on the device (kDummy, like vLLM's --load-format dummy: benchmarks of shapes whose
  // checkpoint would not fit a disk; CUDA only; config.json must still be in model_dir).
  LoadFormat load_format = LoadFormat::kSafetensors;
  // Pipeline parallelism: the layers this engine holds (default: all) and how hidden states
  // cross to the next stage (runtime/pipeline_stage.h, kernels/hidden_transfer.h). CPU and CUDA,
  // dense and MoE.
  PipelineStage stage;
  TransferDtype pp_transfer = TransferDtype::kInt8;
  // > 1: LoadEngine splits the layers over this many stage engines chained in this process
  // (runtime/pipeline_engine.h): what a served pipeline computes, without workers.
  int local_pipeline_stages = 1;
  // Layers per local stage (StagesFromSplit, `--pipeline-split`, as `serve` takes it); empty:
  // BalanceStages.
  std::vector<int> local_pipeline_split;
  // Expert parallelism (DESIGN.md "Parallelism"; CPU and CUDA engines): this engine is rank
  // expert_exchange->rank() of an EP group. It holds the dense weights, loads only the routed
  // experts that expert_owner ([num_experts]: the rank holding each, scheduler/
  // expert_placement.h) gives it, runs its own sequences' attention, and at every MoE layer
  // sends its tokens' rows to the experts' owners through the exchange. A batch may then be
  // empty: every rank takes part in every step. Unset: every expert here, no exchange.
  std::vector<int32_t> expert_owner;
  std::shared_ptr<ExpertExchange> expert_exchange;
};

// Which rows of an entry get logits.
enum class LogitsWanted { kNone, kLast, kAll };

struct BatchEntry {
  int32_t start_position = 0;       // position of tokens[0]; the cache holds [0, start_position)
  std::span<const int32_t> tokens;  // non-empty
  std::span<const int32_t> block_table;  // covers at least start_position + tokens.size() positions
  LogitsWanted logits = LogitsWanted::kLast;
};

// What a pipeline stage's step reads and writes besides the KV cache (Engine::StageStep).
struct StageIo {
  // The previous stage's hidden states of every token of the batch, in the engine's
  // pp_transfer format (TransferBytes of the batch's tokens). Ignored on the first stage.
  std::span<const uint8_t> input;
  // This stage's hidden states for the next stage, resized and filled. Required unless last.
  std::vector<uint8_t>* output = nullptr;
  // Last stage: when set, the logits of the rows the entries ask for (as Forward) instead of
  // samples.
  std::vector<float>* logits = nullptr;
  // GPU engines under a transport that moves device memory (NCCL): the previous stage's message
  // is already in the engine's device input buffer and this stage's is left in its device output
  // buffer (Engine::device_stage_buffers); `input` and `output` are not used.
  bool on_device = false;
};

// Where a GPU stage engine keeps its messages (device pointers, each TransferBytes of
// max_batch_tokens; null on the stage that has none: input on the first, output on the last).
// A step's message is TransferBytes of its tokens, at the start of the buffer.
struct DeviceStageBuffers {
  int device = 0;  // CUDA ordinal
  void* input = nullptr;
  const void* output = nullptr;
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  virtual int block_size() const = 0;
  virtual int num_kv_blocks() const = 0;
  virtual int64_t max_model_len() const = 0;
  virtual int max_batch_tokens() const = 0;
  virtual std::string device_name() const = 0;
  virtual KvDtype kv_dtype() const = 0;
  // What the cached keys are rotated by (EngineOptions::kv_rotation, resolved).
  virtual KvRotation kv_rotation() const { return DefaultKvRotation(kv_dtype()); }
  // The LM head's weights (EngineOptions::lm_head_dtype) on the engine that holds it.
  virtual LmHeadDtype lm_head_dtype() const { return LmHeadDtype::kBf16; }
  // OK while the engine can run steps. An engine in this process always can; one that drives a
  // remote worker (rpc/worker_hub.h) is UNAVAILABLE, naming why, while no worker is attached.
  virtual absl::Status Health() const { return absl::OkStatus(); }

  // Runs the entries as one batch, writes their keys and values into the cache, and returns the
  // logits they asked for, [rows, vocab] row-major, entries in order. Input is validated first
  // (token ids, positions against max_model_len, block ids, block table length, total tokens
  // against max_batch_tokens, two entries writing one block): InvalidArgument/OutOfRange naming
  // what is wrong, and nothing changes.
  virtual absl::Status Forward(std::span<const BatchEntry> entries, std::vector<float>* logits) = 0;

  // Forward, then one token sampled (sampling.h SampleSpec) for each entry whose logits ==
  // kLast, in entry order: samples.size() must equal the number of such entries (kAll entries
  // are not sampled). Only the chosen tokens (and logprobs when asked) leave the device.
  virtual absl::Status Step(std::span<const BatchEntry> entries,
                            std::span<const SampleSpec> samples,
                            std::vector<SampleResult>* results) = 0;

  // Pipelined steps (a pipeline of S workers keeps S steps in flight, one per stage): StartStep
  // hands a step over and may return before it ran; FinishStep returns the results (or the error)
  // of the oldest step started and not finished. Nothing a started step points to needs to
  // outlive StartStep. Engines that run one step at a time say 1 here and keep the
  // Unimplemented defaults; callers then use Step.
  virtual int max_steps_in_flight() const { return 1; }
  virtual absl::Status StartStep(std::span<const BatchEntry> entries,
                                 std::span<const SampleSpec> samples) {
    return absl::UnimplementedError("this engine runs one step at a time (Step)");
  }
  virtual absl::Status FinishStep(std::vector<SampleResult>* results) {
    return absl::UnimplementedError("this engine runs one step at a time (Step)");
  }

  // The layers this engine holds; the whole model unless EngineOptions::stage said otherwise.
  virtual const PipelineStage& stage() const {
    static const PipelineStage kWholeModel;
    return kWholeModel;
  }
  // One step of this engine's pipeline stage: read the previous stage's hidden states (or embed,
  // on the first stage), run the stage's layers (their KV cache written as in Forward), then hand
  // the hidden states on (io.output) or, on the last stage, sample (as Step) or return logits
  // (io.logits). The batch is validated as in Forward, and io.input's size against the batch.
  // A whole-model engine runs Step or Forward; engines without stage support are Unimplemented
  // for other stages.
  virtual absl::Status StageStep(std::span<const BatchEntry> entries,
                                 std::span<const SampleSpec> samples, const StageIo& io,
                                 std::vector<SampleResult>* results);
  // Expert load of the last step (for metrics): the rows each routed expert held here ran, per
  // layer of stage(): [layer - stage().layer_begin][expert]. Empty when the engine does not count
  // (dense models, engines without expert parallelism).
  virtual std::span<const int64_t> last_step_expert_rows() const { return {}; }
  // KV pools the block ids of num_kv_blocks() fall into (scheduler/kv_block_allocator.h): an
  // expert-parallel group keeps one pool per rank, blocks [r * num_kv_blocks() / pools, ...),
  // and a sequence's blocks all come from the pool of the rank that runs it.
  virtual int num_kv_pools() const { return 1; }
  // GPU engines: the buffers of StageIo::on_device. Others: Unimplemented.
  virtual absl::StatusOr<DeviceStageBuffers> device_stage_buffers() {
    return absl::UnimplementedError("device " + device_name() +
                                    " keeps no stage messages in device memory");
  }
};

// Loads the checkpoint for options.device. A device this build cannot use is Unimplemented or
// InvalidArgument naming it.
absl::StatusOr<std::unique_ptr<Engine>> LoadEngine(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options);

// f32 on "cpu", bf16 on CUDA devices.
KvDtype DefaultKvDtype(const std::string& device);
// The KV element types an engine on `device` keeps: all four on the CPU (f32 is the reference;
// the others quantize as a GPU does, for measuring quality), bf16, int8 and int4 on CUDA devices.
std::vector<KvDtype> SupportedKvDtypes(const std::string& device);
// OK when `device` keeps `dtype`; InvalidArgument naming both and what the device keeps otherwise.
// The one check every path takes (engines, serve's flags, a worker's assignment).
absl::Status CheckKvDtype(const std::string& device, KvDtype dtype);
// OK for an unset rotation or one of KvRotation's values; InvalidArgument otherwise (every device
// keeps both).
absl::Status CheckKvRotation(std::optional<KvRotation> rotation);

// The routed experts an expert-parallel rank holds (options.expert_owner's entries equal to
// options.expert_exchange->rank(), ascending: its local expert order); InvalidArgument when the
// options do not describe an expert-parallel group of `config` (a dense model, an owner out of
// range, a rank that owns none). Every engine's check.
absl::StatusOr<std::vector<int32_t>> ExpertsOfRank(const ModelConfig& config,
                                                   const EngineOptions& options);

// Shared validation of a batch against an engine's limits (used by every backend).
absl::Status ValidateBatch(std::span<const BatchEntry> entries, const ModelConfig& config,
                           int block_size, int num_kv_blocks, int64_t max_model_len,
                           int max_batch_tokens);

}  // namespace bitserve
