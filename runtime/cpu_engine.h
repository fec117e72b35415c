// The CPU reference engine: BitNet b1.58's forward pass exactly as DESIGN.md specifies it (int8
// activations per token, int32 ternary products, float32 elsewhere), over a batch of sequences
// that each bring new tokens (prefill chunks and single decode tokens alike).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kv_cache.h"
#include "runtime/model_weights.h"

namespace bitserve {

// Sees every activation right before it is quantized to int8 (for comparing implementations
// layer by layer): name is "qkv_in", "o_in", "gate_up_in" or "down_in"; x is [rows, dim].
using ActivationTrace =
    std::function<void(const std::string& name, int layer, const float* x, int64_t rows, int64_t dim)>;

struct EngineOptions {
  int max_sequences = 8;    // KV slots
  int64_t max_seq_len = 0;  // tokens per sequence; 0: the model's max_position_embeddings
  ActivationTrace trace;    // optional
};

// New tokens of one sequence; they take positions length(slot), length(slot) + 1, ...
struct SequenceChunk {
  int slot = 0;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits of every token (prefill scoring), else of the last only
};

class CpuEngine {
 public:
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Load(const std::filesystem::path& model_dir,
                                                         const EngineOptions& options = {});
  CpuEngine(ModelWeights weights, const EngineOptions& options);

  const ModelConfig& config() const { return weights_.config; }
  int max_sequences() const { return kv_.max_slots(); }
  int64_t max_seq_len() const { return kv_.max_tokens_per_slot(); }
  int64_t length(int slot) const { return kv_.length(slot); }

  // Runs the chunks (distinct slots) as one batch, appends their keys and values to the cache and
  // writes logits, [rows, vocab] with the rows of each chunk in order, to `logits`. Input is
  // validated before anything changes: a bad token id, slot or length is InvalidArgument /
  // OutOfRange and leaves every sequence as it was.
  absl::Status Forward(std::span<const SequenceChunk> chunks, std::vector<float>* logits);

  // Frees a slot's sequence.
  void Release(int slot) { kv_.Release(slot); }

 private:
  absl::Status Validate(std::span<const SequenceChunk> chunks) const;
  void Attention(int layer, std::span<const SequenceChunk> chunks);

  ModelWeights weights_;
  ContiguousKvCache kv_;
  std::vector<float> inv_freq_;
  ActivationTrace trace_;
  // Scratch, grown to the largest batch seen and reused.
  std::vector<float> x_, a_, q_, k_, v_, o_, g_, u_, logits_in_;
  std::vector<int8_t> aq_;
  std::vector<float> scales_;
  std::vector<int32_t> positions_;
};

}  // namespace bitserve
