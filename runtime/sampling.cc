#include "runtime/sampling.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/str_format.h"
#include "kernels/check.h"

namespace bitserve {
namespace {

// vLLM treats temperatures below this as greedy: dividing by them overflows the logits' range.
constexpr float kGreedyTemperature = 1e-5f;
// First chunk of the nucleus sorted for top-p; the chunk grows 4x while the mass is not reached,
// so a peaked distribution sorts a few dozen ids and a flat one at most ~4/3 of the survivors.
constexpr int32_t kNucleusChunk = 64;
constexpr int kMaxTopLogprobs = 20;

absl::Status CheckRange(const char* name, float value, float lo, bool lo_open, float hi) {
  // Written so that NaN fails every comparison and lands in the error.
  const bool ok = (lo_open ? value > lo : value >= lo) && value <= hi;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("%s must be in %c%g, %g], got %g", name, lo_open ? '(' : '[', lo, hi, value));
}

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
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
    return absl::InvalidArgumentError(absl::StrFormat("top_k must be >= 0 (0 = off), got %d", top_k));
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
  uint64_t x = seed_;
  for (uint64_t& word : rng_state_) word = SplitMix64(x);
  if (params.repetition_penalty != 1) {
    prompt_ids_.assign(prompt.begin(), prompt.end());
    std::sort(prompt_ids_.begin(), prompt_ids_.end());
    prompt_ids_.erase(std::unique(prompt_ids_.begin(), prompt_ids_.end()), prompt_ids_.end());
  }
}

void Sampler::Accept(int32_t token) { ++output_counts_[token]; }

double Sampler::NextUniform() {
  // xoshiro256** (Blackman & Vigna); the top 53 bits give a double in [0, 1) exactly.
  std::array<uint64_t, 4>& s = rng_state_;
  const uint64_t result = std::rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = std::rotl(s[3], 45);
  return static_cast<double>(result >> 11) * 0x1.0p-53;
}

void Sampler::ApplyPenalties(std::span<float> logits) const {
  const auto vocab = static_cast<int64_t>(logits.size());
  const auto in_vocab = [vocab](int32_t id) { return id >= 0 && id < vocab; };
  const float rep = params_.repetition_penalty;
  if (rep != 1) {
    // Once per distinct token, as transformers' gather/scatter and vLLM's mask do.
    const auto penalize = [&](int32_t id) {
      float& x = logits[id];
      x = x > 0 ? x / rep : x * rep;
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
      // Two float subtractions, in vLLM's order, so results match it bit for bit.
      logits[id] -= params_.frequency_penalty * static_cast<float>(count);
      logits[id] -= params_.presence_penalty;
    }
  }
}

int32_t Sampler::SampleFromScratch() {
  std::vector<float>& v = scratch_;  // logits, then unnormalized probabilities exp(l - max)
  const auto vocab = static_cast<int32_t>(v.size());
  for (float& x : v) x /= params_.temperature;

  // The survivors are either every id in id order (`all`) or candidates_[0, n). Both orders are
  // fully specified so that sums and the inverse-CDF walk are the same on every machine.
  bool all = true;
  bool sorted = false;  // candidates_[0, n) is in `greater` order
  int32_t n = vocab;
  const auto greater = [&v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  const auto use_candidates = [&] {
    candidates_.resize(vocab);
    std::iota(candidates_.begin(), candidates_.end(), 0);
    all = false;
  };

  if (params_.top_k > 0 && params_.top_k < vocab) {
    use_candidates();
    n = params_.top_k;
    std::nth_element(candidates_.begin(), candidates_.begin() + n, candidates_.end(), greater);
    std::sort(candidates_.begin(), candidates_.begin() + n, greater);
    sorted = true;
  }
  const auto id_at = [&](int32_t i) { return all ? i : candidates_[i]; };

  // To probabilities (unnormalized): the most likely survivor gets exactly exp(0) = 1.
  const float max = sorted ? v[candidates_[0]] : *std::max_element(v.begin(), v.end());
  if (!std::isfinite(max)) {
    // Every logit -inf (nothing can be sampled) or some +inf (it takes all the mass): greedy.
    return sorted ? candidates_[0] : static_cast<int32_t>(std::max_element(v.begin(), v.end()) -
                                                          v.begin());
  }
  double total = 0;
  for (int32_t i = 0; i < n; ++i) {
    float& x = v[id_at(i)];
    x = std::exp(x - max);
    total += x;
  }

  if (params_.top_p < 1) {
    if (all) use_candidates();
    // Sort only as much of the nucleus as needed: grow a sorted prefix chunk by chunk, each chunk
    // selected from the remainder by nth_element, until the prefix holds top_p of the mass.
    const double target = static_cast<double>(params_.top_p) * total;
    int32_t done = sorted ? n : 0;
    int32_t keep = n;
    double cum = 0;
    for (int32_t i = 0;;) {
      for (; i < done; ++i) {
        cum += v[candidates_[i]];
        if (cum >= target) break;
      }
      if (i < done) {
        keep = i + 1;
        break;
      }
      if (done == n) break;  // rounding left the mass just short of target: keep everything
      const int32_t next = std::min(n, std::max(kNucleusChunk, done * 4));
      const auto first = candidates_.begin();
      if (next < n) std::nth_element(first + done, first + next, first + n, greater);
      std::sort(first + done, first + next, greater);
      done = next;
    }
    n = keep;
    sorted = true;
  }

  if (params_.min_p > 0) {
    // The most likely survivor has probability weight 1, so the threshold is min_p itself.
    const float threshold = params_.min_p;
    if (sorted) {
      int32_t keep = 1;
      while (keep < n && v[candidates_[keep]] >= threshold) ++keep;
      n = keep;
    } else {
      candidates_.clear();
      for (int32_t id = 0; id < vocab; ++id) {
        if (v[id] >= threshold) candidates_.push_back(id);
      }
      all = false;
      n = static_cast<int32_t>(candidates_.size());
    }
  }

  // Inverse CDF over the survivors in their fixed order.
  total = 0;
  for (int32_t i = 0; i < n; ++i) total += v[id_at(i)];
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
  // NaN would break the strict ordering that selection relies on; it can never be chosen anyway.
  scratch_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    scratch_[i] = std::isnan(logits[i]) ? -std::numeric_limits<float>::infinity() : logits[i];
  }
  ApplyPenalties(scratch_);
  SampleResult result;
  if (params_.temperature < kGreedyTemperature) {
    result.token =
        static_cast<int32_t>(std::max_element(scratch_.begin(), scratch_.end()) - scratch_.begin());
  } else {
    result.token = SampleFromScratch();
  }
  FillLogprobs(logits, result);
  return result;
}

void Sampler::FillLogprobs(std::span<const float> logits, SampleResult& result) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double log_z = max + std::log(sum);
  result.logprob = static_cast<float>(logits[result.token] - log_z);

  const int want = std::min<int>(params_.top_logprobs, static_cast<int>(logits.size()));
  result.top_logprobs.clear();
  if (want == 0) return;
  // One pass keeping the best `want` (<= 20) ids in order: cheaper than any sort of the vocabulary.
  std::vector<int32_t>& best = candidates_;
  best.clear();
  for (int32_t id = 0; id < static_cast<int32_t>(logits.size()); ++id) {
    const float x = logits[id];
    if (std::isnan(x)) continue;
    if (static_cast<int>(best.size()) == want && !(x > logits[best.back()])) continue;
    if (static_cast<int>(best.size()) == want) best.pop_back();
    // Strict > keeps the earlier (lower) id ahead on ties.
    auto pos = std::find_if(best.begin(), best.end(), [&](int32_t b) { return x > logits[b]; });
    best.insert(pos, id);
  }
  for (int32_t id : best) {
    result.top_logprobs.push_back({id, static_cast<float>(logits[id] - log_z)});
  }
}

}  // namespace bitserve
