// The per-element maths of token sampling that the CPU reference (kernels/cpu/sampling.cc) and the
// GPU sampler (kernels/cuda/head/sampling.cu) share: written once here, for host and device, so
// that both draw the same numbers and compute the same probabilities bit for bit (the CUDA op tests
// compare them token for token). Every float operation is rounded on its own (base/host_device.h:
// no FMA contraction on either side).
#pragma once

#include <cstdint>

#include "base/host_device.h"

namespace bitserve {

// Temperatures below this are greedy (vLLM's rule): dividing by them overflows the logits' range.
inline constexpr float kGreedyTemperature = 1e-5f;

// The uniform in [0, 1) of draw `draw_index` (0, 1, 2, ...) of a sequence seeded with `seed`:
// splitmix64 of seed + (draw_index + 1) * golden ratio, its top 53 bits times 2^-53. A pure
// function of (seed, index), so stateless workers, GPU kernels and a sequence recomputed after
// preemption all draw the same numbers.
BITSERVE_HOST_DEVICE inline double SamplingUniform(uint64_t seed, int64_t draw_index) {
  uint64_t z =
      seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(draw_index) + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z = z ^ (z >> 31);
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

// exp(x) for x <= 0 (x is always a logit minus the maximum), within 1 ulp of expf; exactly 1 at 0
// and exactly 0 below -87 (-inf included), so masked logits never get weight. Cephes' expf
// polynomial without calls or float comparisons, so that CPU loops over the vocabulary vectorize
// (libm's expf is ~6x slower per element there).
BITSERVE_HOST_DEVICE inline float ExpNonPositive(float x) {
  const float t = AddRn(MulRn(x, 1.44269504088896341f), 12582912.0f);  // 1.5 * 2^23: rounds x/ln2
  const float n = SubRn(t, 12582912.0f);
  const uint32_t n_bits = FloatBits(t) - 0x4B400000u;  // n as an integer
  const float r = SubRn(SubRn(x, MulRn(n, 0.693359375f)), MulRn(n, -2.12194440e-4f));  // x - n ln2
  float p = 1.9875691500e-4f;
  p = AddRn(MulRn(p, r), 1.3981999507e-3f);
  p = AddRn(MulRn(p, r), 8.3334519073e-3f);
  p = AddRn(MulRn(p, r), 4.1665795894e-2f);
  p = AddRn(MulRn(p, r), 1.6666665459e-1f);
  p = AddRn(MulRn(p, r), 5.0000001201e-1f);
  p = AddRn(AddRn(MulRn(MulRn(p, r), r), r), 1.0f);      // p * r * r + r + 1, left to right
  const float scale = BitsFloat((n_bits + 127u) << 23);  // 2^n, n in [-126, 0]
  // Bits of x at or below those of -87.0f: +0 or x in [-87, 0). Integer compare: no branch.
  const uint32_t keep = 0u - static_cast<uint32_t>(FloatBits(x) <= 0xC2AE0000u);
  return BitsFloat(FloatBits(MulRn(p, scale)) & keep);
}

// NaN would break the strict order that selection relies on, and poison sums: it counts as -inf.
// Integer operations (a NaN has all exponent bits set and a nonzero mantissa), so CPU loops
// vectorize.
BITSERVE_HOST_DEVICE inline float NanAsNegInf(float x) {
  const uint32_t bits = FloatBits(x);
  const uint32_t nan = 0u - static_cast<uint32_t>((bits & 0x7FFFFFFFu) > 0x7F800000u);
  return BitsFloat((bits & ~nan) | (0xFF800000u & nan));
}

// A 32-bit key that orders like the float (for radix selection and sorting).
BITSERVE_HOST_DEVICE inline uint32_t FloatOrderKey(float x) {
  const uint32_t bits = FloatBits(x);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

// Radix bucket of a value: the top 12 bits of its order key (sign, exponent, 3 mantissa bits:
// eight buckets per power of two).
inline constexpr uint32_t kSamplingBuckets = 4096;
BITSERVE_HOST_DEVICE inline uint32_t SamplingBucket(float x) { return FloatOrderKey(x) >> 20; }

// The repetition penalty of a logit whose token occurred in the prompt or output (Hugging Face's
// rule: a positive logit is divided by the penalty, a negative one multiplied).
BITSERVE_HOST_DEVICE inline float RepetitionPenalized(float logit, float penalty) {
  return logit > 0.0f ? DivRn(logit, penalty) : MulRn(logit, penalty);
}

// The frequency and presence penalties of a logit whose token was generated `count` > 0 times:
// two subtractions in vLLM's order (frequency, then presence), rounded as it rounds them.
BITSERVE_HOST_DEVICE inline float FrequencyPresencePenalized(float logit, int count,
                                                             float frequency, float presence) {
  return SubRn(SubRn(logit, MulRn(frequency, static_cast<float>(count))), presence);
}

}  // namespace bitserve
