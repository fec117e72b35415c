#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_format.h"
#include "base/check.h"

namespace bitserve {
namespace {

// First chunk of the top-p boundary bucket that is ranked; each next chunk is 3x the ranked part,
// so a peaked distribution ranks a few dozen ids and a flat one at most ~4/3 of the bucket.
constexpr int32_t kNucleusChunk = 64;
constexpr int kMaxTopLogprobs = 20;
// Top-k up to this size selects with a heap in one pass; larger k by radix select.
constexpr int32_t kHeapTopK = 1024;

// v[i] = exp(v[i] - max) over a whole row; vectorized.
void ExpShifted(std::span<float> v, float max) {
  for (float& x : v) x = ExpNonPositive(x - max);
}

// Sum in double with four interleaved accumulators: a fixed order (reproducible), and four times
// faster than one dependent chain of adds.
double Sum(std::span<const float> v) {
  double acc[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= v.size(); i += 4) {
    for (int j = 0; j < 4; ++j) acc[j] += v[i + j];
  }
  for (; i < v.size(); ++i) acc[0] += v[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

absl::Status CheckRange(const char* name, float value, float lo, bool lo_open, float hi) {
  // Written so that NaN fails every comparison and lands in the error.
  const bool ok = (lo_open ? value > lo : value >= lo) && value <= hi;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("%s must be in %c%g, %g], got %g", name, lo_open ? '(' : '[', lo, hi, value));
}

// NaN becomes -inf (NanAsNegInf); vectorized.
void CopyNanAsNegInf(std::span<const float> from, std::span<float> to) {
  for (size_t i = 0; i < from.size(); ++i) to[i] = NanAsNegInf(from[i]);
}

// Maximum of a row (NaN ignored) in eight interleaved lanes: std::max_element is one dependent
// chain of compares, several times slower on a 128K vocabulary.
float Max(std::span<const float> v) {
  float lane[8];
  std::fill(lane, lane + 8, -std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    for (int j = 0; j < 8; ++j) lane[j] = std::max(lane[j], v[i + j]);
  }
  for (; i < v.size(); ++i) lane[0] = std::max(lane[0], v[i]);
  return *std::max_element(lane, lane + 8);
}

// Index of the largest value, the first on ties (torch.argmax); 0 when all are -inf.
int32_t ArgMax(std::span<const float> v) {
  const float max = Max(v);
  return static_cast<int32_t>(std::find(v.begin(), v.end(), max) - v.begin()) %
         static_cast<int32_t>(v.size());
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  absl::Status s = CheckRange("temperature", temperature, 0, false, 100);
  if (s.ok()) s = CheckRange("top_p", top_p, 0, true, 1);
  if (s.ok()) s = CheckRange("min_p", min_p, 0, false, 1);
  if (s.ok()) s = CheckRange("repetition_penalty", repetition_penalty, 0, true, 100);
  if (s.ok()) s = CheckRange("presence_penalty", presence_penalty, -2, false, 2);
  if (s.ok()) s = CheckRange("frequency_penalty", frequency_penalty, -2, false, 2);
  if (!s.ok()) return s;
  if (top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_k must be >= 0 (0 = off), got %d", top_k));
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_logprobs must be in [0, %d], got %d", kMaxTopLogprobs, top_logprobs));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt) : params_(params) {
  const absl::Status valid = params.Validate();
  BITSERVE_CHECK(valid.ok()) << valid.message();
  if (params.seed.has_value()) {
    seed_ = *params.seed;
  } else {
    std::random_device device;
    seed_ = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  if (params.repetition_penalty != 1) {
    prompt_ids_.assign(prompt.begin(), prompt.end());
    std::sort(prompt_ids_.begin(), prompt_ids_.end());
    prompt_ids_.erase(std::unique(prompt_ids_.begin(), prompt_ids_.end()), prompt_ids_.end());
  }
}

void Sampler::Accept(int32_t token) { ++output_counts_[token]; }

SampleResult Sampler::SampleFor(const SampleSpec& spec, std::span<const float> logits) {
  BITSERVE_CHECK(spec.params != nullptr);
  params_ = *spec.params;
  params_.seed = spec.seed;
  seed_ = spec.seed;
  draw_index_ = spec.draw_index;
  prompt_ids_.clear();
  if (params_.repetition_penalty != 1) {
    prompt_ids_.assign(spec.prompt.begin(), spec.prompt.end());
    std::sort(prompt_ids_.begin(), prompt_ids_.end());
    prompt_ids_.erase(std::unique(prompt_ids_.begin(), prompt_ids_.end()), prompt_ids_.end());
  }
  output_counts_.clear();
  for (int32_t token : spec.output) ++output_counts_[token];
  return Sample(logits);
}

double Sampler::NextUniform() { return SamplingUniform(seed_, draw_index_++); }

void Sampler::ApplyPenalties(std::span<float> logits) const {
  const auto vocab = static_cast<int64_t>(logits.size());
  const auto in_vocab = [vocab](int32_t id) { return id >= 0 && id < vocab; };
  const float rep = params_.repetition_penalty;
  if (rep != 1) {
    // Once per distinct token, as transformers' gather/scatter and vLLM's mask do.
    const auto penalize = [&](int32_t id) {
      float& x = logits[id];
      x = RepetitionPenalized(x, rep);
    };
    for (int32_t id : prompt_ids_) {
      if (in_vocab(id)) penalize(id);
    }
    for (const auto& [id, count] : output_counts_) {
      if (in_vocab(id) && !std::binary_search(prompt_ids_.begin(), prompt_ids_.end(), id)) {
        penalize(id);
      }
    }
  }
  if (params_.frequency_penalty != 0 || params_.presence_penalty != 0) {
    for (const auto& [id, count] : output_counts_) {
      if (!in_vocab(id)) continue;
      logits[id] = FrequencyPresencePenalized(logits[id], count, params_.frequency_penalty,
                                              params_.presence_penalty);
    }
  }
}

int32_t Sampler::SampleFromScratch() {
  std::vector<float>& v = scratch_;  // logits, then unnormalized probabilities exp(l - max)
  const auto vocab = static_cast<int32_t>(v.size());
  for (float& x : v) x /= params_.temperature;

  // The survivors are every id in id order (`all`), or candidates_[0, n) in an order fixed below.
  // Either way the order is fully specified, so sums and the inverse-CDF walk are reproducible.
  bool all = true;
  int32_t n = vocab;
  const auto greater = [&v](int32_t a, int32_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  };
  const auto id_at = [&](int32_t i) { return all ? i : candidates_[i]; };

  if (params_.top_k > 0 && params_.top_k < vocab) {
    n = params_.top_k;
    candidates_.clear();
    if (n <= kHeapTopK) {
      // One pass with a heap whose front is the weakest of the best n so far. Ids come in
      // increasing order, so a tie with the weakest loses: only a strictly larger value enters,
      // and after the first few thousand ids almost every id fails that one compare.
      for (int32_t id = 0; id < n; ++id) candidates_.push_back(id);
      std::make_heap(candidates_.begin(), candidates_.end(), greater);
      float weakest = v[candidates_.front()];
      for (int32_t id = n; id < vocab; ++id) {
        if (!(v[id] > weakest)) continue;
        std::pop_heap(candidates_.begin(), candidates_.end(), greater);
        candidates_.back() = id;
        std::push_heap(candidates_.begin(), candidates_.end(), greater);
        weakest = v[candidates_.front()];
      }
    } else {
      // Radix select: count ids per bucket, keep the top buckets holding at least n ids; only
      // those go through nth_element.
      std::array<uint32_t, kSamplingBuckets> count{};
      for (float x : v) ++count[SamplingBucket(x)];
      uint32_t b = kSamplingBuckets - 1;
      for (uint32_t seen = count[b]; seen < static_cast<uint32_t>(n);) seen += count[--b];
      for (int32_t id = 0; id < vocab; ++id) {
        if (SamplingBucket(v[id]) >= b) candidates_.push_back(id);
      }
      std::nth_element(candidates_.begin(), candidates_.begin() + n, candidates_.end(), greater);
    }
    // The set is unique under `greater` (a strict total order), so sorting makes it reproducible
    // whatever order the selection left it in.
    std::sort(candidates_.begin(), candidates_.begin() + n, greater);
    all = false;
  }

  // To unnormalized probabilities: the most likely survivor gets exactly exp(0) = 1.
  const float max = all ? Max(v) : v[candidates_[0]];
  if (!std::isfinite(max)) {
    // Every logit -inf (nothing can be sampled) or some +inf (it takes all the mass): greedy.
    return all ? ArgMax(v) : candidates_[0];
  }
  double total = 0;
  if (all) {
    ExpShifted(v, max);
    total = Sum(v);
  } else {
    for (int32_t i = 0; i < n; ++i) {
      float& x = v[candidates_[i]];
      x = ExpNonPositive(x - max);
      total += x;
    }
  }

  if (params_.top_p < 1) {
    const double target = static_cast<double>(params_.top_p) * total;
    // candidates_[0, first) lies wholly inside the nucleus; [first, ranked) is in `greater` order.
    int32_t first = 0;
    int32_t ranked = n;
    double cum = 0;
    if (all) {
      // Bucket the probability mass. Buckets above the boundary bucket b (where the mass crosses
      // top_p) are wholly in the nucleus: they keep id order and need no sorting. Only bucket b
      // is ranked, and only as far as needed.
      std::array<double, kSamplingBuckets> mass{};
      for (float x : v) mass[SamplingBucket(x)] += x;
      uint32_t b = kSamplingBuckets - 1;
      while (b > 0 && cum + mass[b] < target) cum += mass[b--];
      // One pass: ids above b fill candidates_ from the front in id order, ids in b fill it from
      // the back (their order does not matter: they are ranked by a total order before use).
      candidates_.resize(vocab);
      int32_t front = 0;
      int32_t back = vocab;
      for (int32_t id = 0; id < vocab; ++id) {
        const uint32_t bucket = SamplingBucket(v[id]);
        if (bucket > b) candidates_[front++] = id;
        if (bucket == b) candidates_[--back] = id;
      }
      candidates_.erase(candidates_.begin() + front, candidates_.begin() + back);
      first = front;
      ranked = front;
      n = static_cast<int32_t>(candidates_.size());
      all = false;
    }
    // Walk the ranked part; rank the next chunk (nth_element, then sort) when it runs out.
    int32_t keep = n;  // if rounding leaves the mass just short of target: keep everything
    for (int32_t i = first;;) {
      for (; i < ranked; ++i) {
        cum += v[candidates_[i]];
        if (cum >= target) break;
      }
      if (i < ranked) {
        keep = i + 1;
        break;
      }
      if (ranked == n) break;
      const int32_t next = std::min(n, ranked + std::max(kNucleusChunk, 3 * (ranked - first)));
      const auto c = candidates_.begin();
      if (next < n) std::nth_element(c + ranked, c + next, c + n, greater);
      std::sort(c + ranked, c + next, greater);
      ranked = next;
    }
    n = keep;
  }

  bool truncated = !all;
  if (params_.min_p > 0) {
    // The most likely survivor has weight exactly 1, so min_p itself is the threshold. Filtering
    // keeps the survivors' order.
    const float threshold = params_.min_p;
    if (all) {
      candidates_.clear();
      for (int32_t id = 0; id < vocab; ++id) {
        if (v[id] >= threshold) candidates_.push_back(id);
      }
      all = false;
      n = static_cast<int32_t>(candidates_.size());
    } else {
      const auto end = std::remove_if(candidates_.begin(), candidates_.begin() + n,
                                      [&](int32_t id) { return v[id] < threshold; });
      n = static_cast<int32_t>(end - candidates_.begin());
    }
    truncated = true;
  }

  // Inverse CDF over the survivors in their fixed order.
  if (truncated) {
    total = 0;
    for (int32_t i = 0; i < n; ++i) total += v[id_at(i)];
  }
  const double u = NextUniform() * total;
  double cum = 0;
  int32_t last_positive = id_at(0);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t id = id_at(i);
    if (v[id] <= 0) continue;
    cum += v[id];
    if (u < cum) return id;
    last_positive = id;
  }
  return last_positive;  // u * total rounded up to total
}

SampleResult Sampler::Sample(std::span<const float> logits) {
  BITSERVE_CHECK(!logits.empty()) << "Sample needs a row of logits";
  scratch_.resize(logits.size());
  CopyNanAsNegInf(logits, scratch_);
  ApplyPenalties(scratch_);
  SampleResult result;
  if (params_.temperature < kGreedyTemperature) {
    result.token = ArgMax(scratch_);
  } else {
    result.token = SampleFromScratch();
  }
  FillLogprobs(logits, result);
  return result;
}

void Sampler::FillLogprobs(std::span<const float> logits, SampleResult& result) {
  // log_softmax needs the normalizer over the raw row; scratch_ is free again for the exps.
  const float max = Max(logits);
  CopyNanAsNegInf(logits, scratch_);
  ExpShifted(scratch_, max);
  const double log_z = max + std::log(Sum(scratch_));
  result.logprob = static_cast<float>(logits[result.token] - log_z);

  const int want = std::min<int>(params_.top_logprobs, static_cast<int>(logits.size()));
  result.top_logprobs.clear();
  if (want == 0) return;
  // One pass keeping the best `want` (<= 20) ids in order: cheaper than any sort of the vocabulary.
  // Ids come in increasing order, so only a strictly larger value displaces an equal one.
  std::vector<int32_t>& best = candidates_;
  best.clear();
  float weakest = -std::numeric_limits<float>::infinity();
  bool full = false;
  for (int32_t id = 0; id < static_cast<int32_t>(logits.size()); ++id) {
    const float x = logits[id];
    if ((full && !(x > weakest)) || std::isnan(x)) continue;
    auto pos = std::find_if(best.begin(), best.end(), [&](int32_t b) { return x > logits[b]; });
    best.insert(pos, id);
    if (static_cast<int>(best.size()) > want) best.pop_back();
    full = static_cast<int>(best.size()) == want;
    weakest = logits[best.back()];
  }
  for (int32_t id : best) {
    result.top_logprobs.push_back({id, static_cast<float>(logits[id] - log_z)});
  }
}

}  // namespace bitserve
