// Per-sequence token sampling: penalties, temperature, top-k, top-p, min-p, a seeded RNG, logprobs.
//
// Order of operations in Sampler::Sample (vLLM's and transformers' order):
//   1. penalties on a copy of the logits: repetition (HF: over prompt + generated tokens, a
//      positive logit is divided by the penalty, a negative one multiplied), then frequency and
//      presence (OpenAI/vLLM: over generated tokens only,
//      logit -= frequency * count + presence * [count > 0]);
//   2. temperature 0 (or below 1e-5, as vLLM) is greedy: argmax of the penalized logits, the first
//      index on ties; no random number is drawn and steps 3-6 do not apply;
//   3. logits / temperature;
//   4. top-k: the k largest (ties broken toward the lower token id);
//   5. top-p: the smallest most-likely-first prefix of the survivors whose probability mass
//      (renormalized over the survivors) reaches top_p; the token that crosses top_p is kept;
//   6. min-p: drop tokens whose probability is below min_p times the most likely token's;
//   7. one uniform draw u in [0, 1) picks the token by inverse CDF over the survivors.
//
// Logprobs follow vLLM's default ("raw_logprobs"): log_softmax of the model's raw logits, before
// penalties and temperature, so they describe the model, not the sampling settings.
//
// Reproducibility: the uniform of a sequence's n-th draw is a pure function of (seed, n),
// SamplingUniform (kernels/sampling_math.h, shared with the GPU sampler, as are exp, the radix
// buckets and the penalties), so that stateless workers and GPU kernels draw the same numbers, and
// a sequence recomputed after preemption samples exactly what it would have (std::
// distributions differ between standard libraries). exp is our own polynomial in plain float
// arithmetic, not libm's; survivors are
// visited in an order fixed by this code (never the unspecified order nth_element leaves) and
// summed in double in that order. So a seed gives the same tokens on every machine, up to a
// compiler fusing a*b+c into an FMA (not done on x86-64 without -mfma), which moves a probability
// by ~1 ulp and changes a token only when the draw lands that close to a boundary.
//
// Cost on a 128K vocabulary: O(V) passes (copy, max, exp, sums) plus selection that touches only
// the candidates: a heap for top-k, radix buckets of the probability mass for top-p, so only the
// bucket where the mass crosses top_p is ever sorted. NaN logits count as -inf.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "kernels/sampling_math.h"

namespace bitserve {

struct SamplingParams {
  float temperature = 0;         // 0 = greedy; [0, 100]
  int top_k = 0;                 // 0 = off; larger than the vocabulary = off
  float top_p = 1;               // (0, 1]
  float min_p = 0;               // [0, 1]
  float repetition_penalty = 1;  // (0, 100]; 1 = off
  float presence_penalty = 0;    // [-2, 2]
  float frequency_penalty = 0;   // [-2, 2]
  std::optional<uint64_t> seed;  // absent: drawn from std::random_device (see Sampler::seed())
  int top_logprobs = 0;          // [0, 20] alternatives returned with each token

  // InvalidArgument naming the field, e.g. "temperature must be in [0, 100], got -1"; NaN fails.
  absl::Status Validate() const;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

struct SampleResult {
  int32_t token = 0;
  float logprob = 0;  // log_softmax(raw logits)[token]
  // The params.top_logprobs most likely tokens under log_softmax(raw logits), most likely first,
  // ties toward the lower id. The chosen token may or may not be among them.
  std::vector<TokenLogprob> top_logprobs;
};

// Everything that decides one sampled token of a sequence, for engines that keep no per-sequence
// state: the draw index (the number of tokens the sequence has sampled before) fixes the random
// number, so a sequence recomputed after preemption samples exactly what it would have.
struct SampleSpec {
  const SamplingParams* params = nullptr;  // validated
  uint64_t seed = 0;
  int64_t draw_index = 0;
  std::span<const int32_t> prompt;  // for the repetition penalty
  std::span<const int32_t> output;  // generated so far, for the penalties
};

// One per sequence. Not thread-safe; sequences of a batch each own one.
class Sampler {
 public:
  // `params` must have passed Validate() (checked). `prompt` feeds the repetition penalty.
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt);

  // Chooses the next token from one row of logits (the whole vocabulary). `logits` is not
  // modified. Prompt or generated ids outside the row are ignored.
  SampleResult Sample(std::span<const float> logits);

  // Samples for a sequence described by `spec` alone (its params, seed, draw index and history
  // replace this sampler's), reusing this sampler's scratch memory.
  SampleResult SampleFor(const SampleSpec& spec, std::span<const float> logits);
  // Records a generated token (normally the one Sample returned) for the penalties.
  void Accept(int32_t token);
  // The index of the next random draw (draws made so far). A sampler rebuilt for a sequence that
  // already drew n numbers continues with set_draw_index(n).
  int64_t draw_index() const { return draw_index_; }
  void set_draw_index(int64_t n) { draw_index_ = n; }

  // Step 1 alone, in place: for tests, and for a batched device sampler that does steps 2-7 itself.
  void ApplyPenalties(std::span<float> logits) const;

  // The seed in use: params.seed, or the one drawn when it was absent. Passing it back as
  // params.seed reproduces the sequence.
  uint64_t seed() const { return seed_; }
  const SamplingParams& params() const { return params_; }

 private:
  // Steps 3-7 on scratch_ (penalized logits), returning the chosen token.
  int32_t SampleFromScratch();
  void FillLogprobs(std::span<const float> logits, SampleResult& result);
  double NextUniform();  // [0, 1)

  SamplingParams params_;
  uint64_t seed_;
  int64_t draw_index_ = 0;
  // Distinct prompt token ids, sorted; kept only when the repetition penalty is on.
  std::vector<int32_t> prompt_ids_;
  std::unordered_map<int32_t, int32_t> output_counts_;  // generated token -> times generated
  // Scratch reused across steps: vocabulary-sized, so a step allocates nothing after the first.
  std::vector<float> scratch_;
  std::vector<int32_t> candidates_;
};

}  // namespace bitserve
