// What a generation request is, what comes back, and the interface both the in-process
// coordinator (rpc/coordinator.h) and the remote gRPC client (rpc/client.h) implement, so that the
// gRPC service and `bitserve batch` drive either one the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cpu/sampling.h"
#include "runtime/text/chat_template.h"

namespace bitserve::rpc {

// Exactly one of: plain text (tokenized with BOS when the tokenizer's config adds it, as
// transformers' add_special_tokens=True), chat messages (the model's chat
// template), or token ids (used as they are).
struct TextInput {
  std::string text;
};
struct ChatInput {
  std::vector<ChatMessage> messages;
};
struct TokenInput {
  std::vector<int32_t> ids;
};
using GenerationInput = std::variant<TextInput, ChatInput, TokenInput>;

struct GenerationParams {
  SamplingParams sampling;  // greedy by default; sampling.top_logprobs alternatives per token
  bool logprobs = false;    // return the chosen token's logprob (and top_logprobs alternatives)
  int max_new_tokens = 256;
  std::vector<std::string> stop_strings;
  std::vector<int> stop_token_ids;  // added to the model's eos ids (unless ignore_eos)
  bool ignore_eos = false;
  bool include_stop_string = false;
  int priority = 0;        // higher first
  std::string request_id;  // optional client id, echoed in logs and results
  // Report prefill progress of prompts longer than one chunk (GenerationChunk::
  // prompt_tokens_processed), for progress bars over long documents.
  bool prefill_progress = false;
};

// Finish reasons, as strings on the wire and in JSONL: "eos", "stop", "length", "cancelled",
// "error".
struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// One streamed piece of a result. The last chunk of a request has final == true and carries the
// finish reason (and, for "error", a non-OK status whose code maps 1:1 to a gRPC code) and usage.
struct GenerationChunk {
  std::vector<int32_t> token_ids;      // new tokens
  std::string text;                    // text that became final with them (never splits UTF-8)
  std::vector<SampleResult> logprobs;  // one per new token when params.logprobs
  bool final = false;
  std::string finish_reason;
  absl::Status status;  // OK unless finish_reason == "error"
  Usage usage;
  uint64_t seed = 0;  // the sampling seed used (final chunk)
  // With params.prefill_progress: a chunk without tokens after each prefill chunk of the prompt
  // that is not its last, saying how many prompt tokens are prefilled (of usage.prompt_tokens).
  // 0 otherwise.
  int prompt_tokens_processed = 0;
};

// Called on the backend's own thread, in order, exactly once with final == true per accepted
// request (also when it is cancelled or fails). Must not block for long.
using ChunkCallback = std::function<void(GenerationChunk chunk)>;

struct ModelSummary {
  std::string model_dir;
  std::string architecture;  // "BitNetForCausalLM"
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int max_model_len = 0;
  int max_num_seqs = 0;
  int max_waiting = 0;
  int max_num_batched_tokens = 0;
  int kv_block_size = 0;
  int kv_num_blocks = 0;
  int64_t kv_capacity_tokens = 0;
  std::string kv_dtype;  // "f32" on CPU, "bf16" / "int8" / "int4" on GPUs
  std::string device;
  std::vector<int> eos_token_ids;
};

class GenerationBackend {
 public:
  virtual ~GenerationBackend() = default;

  // Validates and queues a request. Errors before anything is queued: INVALID_ARGUMENT naming the
  // field, RESOURCE_EXHAUSTED (queue full, prompt beyond capacity, with the numbers),
  // UNAVAILABLE (starting, draining, workers lost). On success `on_chunk` will be called, from
  // another thread, until a final chunk; the returned id names the request for Cancel.
  virtual absl::StatusOr<uint64_t> Submit(GenerationInput input, GenerationParams params,
                                          ChunkCallback on_chunk) = 0;
  // Ends a request at the next iteration with finish reason "cancelled"; `why` is the final
  // chunk's status: CANCELLED (the client went away or asked), DEADLINE_EXCEEDED (its deadline
  // passed; metrics count it apart). Unknown or finished ids are ignored.
  virtual void Cancel(uint64_t id, const absl::Status& why) = 0;

  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text,
                                                        bool add_special) = 0;
  virtual absl::StatusOr<ModelSummary> Info() = 0;
};

}  // namespace bitserve::rpc
