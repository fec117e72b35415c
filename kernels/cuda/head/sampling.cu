#include <algorithm>
#include <climits>
#include <cstring>
#include <cub/cub.cuh>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/head/sampling.cuh"
#include "kernels/sampling_math.h"

namespace bitserve::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
// The per-element maths (SamplingUniform, ExpNonPositive, NanAsNegInf, SamplingBucket, the
// penalties) is kernels/sampling_math.h's, shared with the CPU reference.

// A sort key that orders like the float, -0 and +0 equal (as `greater` compares them).
__device__ uint32_t OrderKey(float x) { return FloatOrderKey(x == 0.0f ? 0.0f : x); }

// ---- block-wide helpers --------------------------------------------------------------------

struct Shared {
  double d[kWarps];
  double warp_excl[kWarps];
  float f[kWarps];
  int i[kWarps];
  double total;
  int found, last;
};

__device__ double BlockSum(double v, Shared& sh) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh.d[threadIdx.x / 32] = v;
  __syncthreads();
  v = sh.d[0];
  for (int w = 1; w < kWarps; ++w) v += sh.d[w];
  return v;
}

__device__ int BlockSumInt(int v, Shared& sh) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh.i[threadIdx.x / 32] = v;
  __syncthreads();
  v = sh.i[0];
  for (int w = 1; w < kWarps; ++w) v += sh.i[w];
  return v;
}

__device__ float BlockMax(float v, Shared& sh) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh.f[threadIdx.x / 32] = v;
  __syncthreads();
  v = sh.f[0];
  for (int w = 1; w < kWarps; ++w) v = fmaxf(v, sh.f[w]);
  return v;
}

// (value, index) with the larger value first, then the lower index; index INT_MAX = none.
struct Best {
  float v;
  int i;
};
__device__ bool Better(const Best& a, const Best& b) {
  if (a.i == INT_MAX) return false;
  if (b.i == INT_MAX) return true;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

__device__ Best BlockBest(Best b, Shared& sh) {
  for (int o = 16; o > 0; o /= 2) {
    Best other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    if (Better(other, b)) b = other;
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) {
    sh.f[threadIdx.x / 32] = b.v;
    sh.i[threadIdx.x / 32] = b.i;
  }
  __syncthreads();
  Best best{sh.f[0], sh.i[0]};
  for (int w = 1; w < kWarps; ++w) {
    const Best other{sh.f[w], sh.i[w]};
    if (Better(other, best)) best = other;
  }
  return best;
}

// The first index of max(v[0, n)) (NaN-free v): runtime's ArgMax.
__device__ int BlockArgMax(const float* v, int n, Shared& sh) {
  Best b{-INFINITY, INT_MAX};
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const Best c{v[i], i};
    if (Better(c, b)) b = c;
  }
  return BlockBest(b, sh).i;
}

// Exclusive prefix of v in thread order; sh.total gets the sum.
__device__ double BlockExclusiveScan(double v, Shared& sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double inc = v;
  for (int o = 1; o < 32; o *= 2) {
    const double n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  double excl = __shfl_up_sync(0xffffffffu, inc, 1);
  if (lane == 0) excl = 0.0;
  __syncthreads();
  if (lane == 31) sh.d[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const double w = sh.d[lane];
    double winc = w;
    for (int o = 1; o < 32; o *= 2) {
      const double n = __shfl_up_sync(0xffffffffu, winc, o);
      if (lane >= o) winc += n;
    }
    double wexcl = __shfl_up_sync(0xffffffffu, winc, 1);
    if (lane == 0) wexcl = 0.0;
    sh.warp_excl[lane] = wexcl;
    if (lane == 31) sh.total = winc;
  }
  __syncthreads();
  return sh.warp_excl[warp] + excl;
}

// Over positions [0, n) with weights weight(i) >= 0, summed in position order: the first
// position with weight > 0 where the running sum reaches factor * total (>= when `inclusive`,
// > otherwise), or -1; *last_positive = the last position with weight > 0, or -1. Each thread owns
// a contiguous chunk, so the walk is the reference's sequential one up to the order in which the
// chunk sums are added.
template <typename Weight>
__device__ int FindFirstCrossing(int n, Weight weight, double factor, bool inclusive, Shared& sh,
                                 int* last_positive) {
  const int chunk = (n + kThreads - 1) / kThreads;
  const int begin = min(n, static_cast<int>(threadIdx.x) * chunk);
  const int end = min(n, begin + chunk);
  double local = 0.0;
  int my_last = -1;
  for (int i = begin; i < end; ++i) {
    const float w = weight(i);
    if (w > 0.0f) my_last = i;
    local += w;
  }
  const double prefix = BlockExclusiveScan(local, sh);
  const double threshold = factor * sh.total;
  if (threadIdx.x == 0) {
    sh.found = INT_MAX;
    sh.last = -1;
  }
  __syncthreads();
  if (my_last >= 0) atomicMax(&sh.last, my_last);
  double cum = prefix;
  for (int i = begin; i < end; ++i) {
    const float w = weight(i);
    if (!(w > 0.0f)) continue;
    cum += w;
    if (inclusive ? cum >= threshold : threshold < cum) {
      atomicMin(&sh.found, i);
      break;
    }
  }
  __syncthreads();
  const int found = sh.found;
  *last_positive = sh.last;
  __syncthreads();
  return found == INT_MAX ? -1 : found;
}

// ---- the kernels ---------------------------------------------------------------------------

bool IsTopK(const SamplingRow& p, int64_t vocab) { return p.top_k > 0 && p.top_k < vocab; }
__device__ bool IsTopKDevice(const SamplingRow& p, int vocab) {
  return p.top_k > 0 && p.top_k < vocab;
}

// Steps 1-3 and the log_softmax normalizer; finishes greedy rows. state[2r] = log_z,
// state[2r + 1] = total mass (unranked rows) or -1 for a finished row.
__global__ void __launch_bounds__(kThreads)
    SamplePrepareKernel(const float* __restrict__ logits, const SamplingRow* __restrict__ rows,
                        int row0, const PenaltyEntry* __restrict__ penalties, int vocab,
                        float* __restrict__ work, uint64_t* __restrict__ keys,
                        int32_t* __restrict__ ids, double* __restrict__ state,
                        float* __restrict__ row_max, int32_t* __restrict__ tokens,
                        float* __restrict__ logprobs) {
  __shared__ Shared sh;
  const int r = row0 + blockIdx.x;
  const SamplingRow p = rows[r];
  const float* raw = logits + static_cast<int64_t>(r) * vocab;
  float* w = work + static_cast<int64_t>(blockIdx.x) * vocab;

  // log_softmax normalizer of the raw row (FillLogprobs).
  float raw_max = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += kThreads) raw_max = fmaxf(raw_max, raw[i]);
  raw_max = BlockMax(raw_max, sh);
  double sum = 0.0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    sum += ExpNonPositive(__fsub_rn(NanAsNegInf(raw[i]), raw_max));
  }
  sum = BlockSum(sum, sh);
  const double log_z = static_cast<double>(raw_max) + log(sum);

  // Step 1: the penalized copy. Entries hold distinct ids, so no two threads touch one element.
  for (int i = threadIdx.x; i < vocab; i += kThreads) w[i] = NanAsNegInf(raw[i]);
  __syncthreads();
  for (int e = p.penalty_begin + threadIdx.x; e < p.penalty_end; e += kThreads) {
    const PenaltyEntry entry = penalties[e];
    if (entry.id < 0 || entry.id >= vocab) continue;
    float x = w[entry.id];
    if (p.repetition_penalty != 1.0f && entry.repeat != 0)
      x = RepetitionPenalized(x, p.repetition_penalty);
    if ((p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) && entry.count > 0) {
      x = FrequencyPresencePenalized(x, entry.count, p.frequency_penalty, p.presence_penalty);
    }
    w[entry.id] = x;
  }
  __syncthreads();

  const bool greedy = p.temperature < kGreedyTemperature;
  if (!greedy) {
    for (int i = threadIdx.x; i < vocab; i += kThreads) w[i] = __fdiv_rn(w[i], p.temperature);
  }
  float vmax = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += kThreads) vmax = fmaxf(vmax, w[i]);
  vmax = BlockMax(vmax, sh);
  int token = -1;
  if (greedy || !isfinite(vmax)) token = BlockArgMax(w, vocab, sh);

  double total = 0.0;
  const bool top_k = IsTopKDevice(p, vocab);
  if (token < 0 && !top_k) {
    // Unnormalized probabilities for the unranked walk and for top-p's ranking.
    double local = 0.0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float e = ExpNonPositive(__fsub_rn(w[i], vmax));
      w[i] = e;
      local += e;
    }
    total = BlockSum(local, sh);
  }
  if (p.sort_slot >= 0) {
    // Rank by the scaled logit (top-k) or by the probability (top-p), as the reference does;
    // ascending keys = descending values, and the stable sort keeps ties in id order.
    const int64_t base = static_cast<int64_t>(p.sort_slot) * vocab;
    const uint64_t slot_bits = static_cast<uint64_t>(p.sort_slot) << 32;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      keys[base + i] = slot_bits | (0xFFFFFFFFu - OrderKey(w[i]));
      ids[base + i] = i;
    }
  }
  if (threadIdx.x == 0) {
    state[2 * r] = log_z;
    state[2 * r + 1] = token >= 0 ? -1.0 : total;
    row_max[r] = vmax;
    if (token >= 0) {
      tokens[r] = token;
      logprobs[r] = static_cast<float>(static_cast<double>(raw[token]) - log_z);
    }
  }
}

// Steps 4-7 for the rows SamplePrepareKernel left open.
__global__ void __launch_bounds__(kThreads)
    SampleSelectKernel(const float* __restrict__ logits, const SamplingRow* __restrict__ rows,
                       int row0, int vocab, const float* __restrict__ work,
                       const int32_t* __restrict__ sorted_ids, const double* __restrict__ state,
                       const float* __restrict__ row_max, int32_t* __restrict__ tokens,
                       float* __restrict__ logprobs) {
  __shared__ Shared sh;
  const int r = row0 + blockIdx.x;
  if (state[2 * r + 1] < 0.0) return;  // finished by the argmax
  const SamplingRow p = rows[r];
  const float* w = work + static_cast<int64_t>(blockIdx.x) * vocab;
  const int32_t* s =
      p.sort_slot >= 0 ? sorted_ids + static_cast<int64_t>(p.sort_slot) * vocab : nullptr;
  const float min_p = p.min_p;
  auto filter = [min_p](float x) { return min_p > 0.0f && x < min_p ? 0.0f : x; };
  const double u = SamplingUniform(p.seed, p.draw_index);
  int last = -1, found = -1, token = 0;

  if (IsTopKDevice(p, vocab)) {
    // The k best scaled logits in ranked order; the best has weight exp(0) = 1.
    const float vmax = row_max[r];
    auto prob = [&](int i) { return ExpNonPositive(__fsub_rn(w[s[i]], vmax)); };
    int keep = p.top_k;
    if (p.top_p < 1.0f) {
      const int c = FindFirstCrossing(p.top_k, prob, static_cast<double>(p.top_p), true, sh, &last);
      if (c >= 0) keep = c + 1;
    }
    auto weight = [&](int i) { return i < keep ? filter(prob(i)) : 0.0f; };
    found = FindFirstCrossing(keep, weight, u, false, sh, &last);
    const int at = found >= 0 ? found : max(last, 0);
    token = s[at];
  } else {
    int boundary_first = -1, boundary_last = -1;  // ranked part [first, last] of top-p
    uint32_t boundary_bucket = 0;
    if (p.top_p < 1.0f) {
      auto ranked = [&](int i) { return w[s[i]]; };
      const int c = FindFirstCrossing(vocab, ranked, static_cast<double>(p.top_p), true, sh, &last);
      if (c >= 0) {
        boundary_bucket = SamplingBucket(w[s[c]]);
        int above = 0;
        for (int i = threadIdx.x; i < vocab; i += kThreads)
          above += SamplingBucket(w[i]) > boundary_bucket;
        boundary_first = BlockSumInt(above, sh);
        boundary_last = c;
      }
    }
    if (boundary_last < 0) {
      // No ranking: every id in id order.
      auto weight = [&](int i) { return filter(w[i]); };
      found = FindFirstCrossing(vocab, weight, u, false, sh, &last);
      token = found >= 0 ? found : max(last, 0);
    } else {
      // Ids above the boundary bucket in id order, then the boundary bucket's kept ids ranked.
      const int n = vocab + (boundary_last - boundary_first + 1);
      auto weight = [&](int i) {
        if (i < vocab) return SamplingBucket(w[i]) > boundary_bucket ? filter(w[i]) : 0.0f;
        return filter(w[s[boundary_first + (i - vocab)]]);
      };
      found = FindFirstCrossing(n, weight, u, false, sh, &last);
      const int at = found >= 0 ? found : max(last, 0);
      token = at < vocab ? at : s[boundary_first + (at - vocab)];
    }
  }
  if (threadIdx.x == 0) {
    tokens[r] = token;
    logprobs[r] = static_cast<float>(
        static_cast<double>(logits[static_cast<int64_t>(r) * vocab + token]) - state[2 * r]);
  }
}

// The top_logprobs best raw logits (NaN skipped), most likely first, ties toward the lower id.
__global__ void __launch_bounds__(kThreads)
    TopLogprobsKernel(const float* __restrict__ logits, const SamplingRow* __restrict__ rows,
                      int vocab, const double* __restrict__ state, int32_t* __restrict__ top_ids,
                      float* __restrict__ top_logprobs, int32_t* __restrict__ top_count) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  const int want = min(rows[r].top_logprobs, vocab);
  const float* raw = logits + static_cast<int64_t>(r) * vocab;
  float prev_v = INFINITY;
  int prev_i = -1, count = 0;
  for (; count < want; ++count) {
    Best b{-INFINITY, INT_MAX};
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = raw[i];
      if (isnan(x) || !(x < prev_v || (x == prev_v && i > prev_i))) continue;
      const Best c{x, i};
      if (Better(c, b)) b = c;
    }
    b = BlockBest(b, sh);
    if (b.i == INT_MAX) break;
    if (threadIdx.x == 0) {
      top_ids[r * kMaxTopLogprobs + count] = b.i;
      top_logprobs[r * kMaxTopLogprobs + count] =
          static_cast<float>(static_cast<double>(raw[b.i]) - state[2 * r]);
    }
    prev_v = b.v;
    prev_i = b.i;
  }
  if (threadIdx.x == 0) top_count[r] = count;
}

// ---- greedy rows without penalties: the row split over many blocks ----------------------
// A single block per row reads a 128K row several times at one SM's bandwidth (ncu, H100: 69 us);
// here kGreedySplits blocks share it. Same results: the argmax (first index of the maximum) does
// not depend on the split, and log_z = max + log(sum of exp(x - max)) with the same max and the
// same float exps, only summed in another order.
constexpr int kGreedyThreads = 256;
constexpr int kGreedySplits = 32;

__global__ void __launch_bounds__(kGreedyThreads)
    GreedyPartialMaxKernel(const float* __restrict__ logits, int vocab, float* __restrict__ part_v,
                           int32_t* __restrict__ part_i) {
  __shared__ float sv[kGreedyThreads / 32];
  __shared__ int si[kGreedyThreads / 32];
  const int r = blockIdx.y, split = blockIdx.x;
  const int chunk = (vocab + kGreedySplits - 1) / kGreedySplits;
  const int begin = split * chunk, end = min(vocab, begin + chunk);
  const float* raw = logits + static_cast<int64_t>(r) * vocab;
  Best b{-INFINITY, INT_MAX};
  for (int i = begin + threadIdx.x; i < end; i += kGreedyThreads) {
    const Best c{NanAsNegInf(raw[i]), i};
    if (Better(c, b)) b = c;
  }
  for (int o = 16; o > 0; o /= 2) {
    const Best other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    if (Better(other, b)) b = other;
  }
  if (threadIdx.x % 32 == 0) {
    sv[threadIdx.x / 32] = b.v;
    si[threadIdx.x / 32] = b.i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kGreedyThreads / 32; ++w) {
      const Best other{sv[w], si[w]};
      if (Better(other, b)) b = other;
    }
    part_v[r * kGreedySplits + split] = b.v;
    part_i[r * kGreedySplits + split] = b.i;
  }
}

__global__ void __launch_bounds__(kGreedyThreads)
    GreedyPartialSumKernel(const float* __restrict__ logits, int vocab,
                           const float* __restrict__ part_v, double* __restrict__ part_sum) {
  __shared__ double sd[kGreedyThreads / 32];
  const int r = blockIdx.y, split = blockIdx.x;
  float max = -INFINITY;
  for (int s = 0; s < kGreedySplits; ++s) max = fmaxf(max, part_v[r * kGreedySplits + s]);
  const int chunk = (vocab + kGreedySplits - 1) / kGreedySplits;
  const int begin = split * chunk, end = min(vocab, begin + chunk);
  const float* raw = logits + static_cast<int64_t>(r) * vocab;
  double sum = 0.0;
  for (int i = begin + threadIdx.x; i < end; i += kGreedyThreads) {
    sum += ExpNonPositive(__fsub_rn(NanAsNegInf(raw[i]), max));
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % 32 == 0) sd[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kGreedyThreads / 32; ++w) sum += sd[w];
    part_sum[r * kGreedySplits + split] = sum;
  }
}

__global__ void GreedyFinishKernel(const float* __restrict__ logits, int vocab, int rows,
                                   const float* __restrict__ part_v,
                                   const int32_t* __restrict__ part_i,
                                   const double* __restrict__ part_sum, double* __restrict__ state,
                                   int32_t* __restrict__ tokens, float* __restrict__ logprobs) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  Best b{-INFINITY, INT_MAX};
  double sum = 0.0;
  for (int s = 0; s < kGreedySplits; ++s) {
    const Best c{part_v[r * kGreedySplits + s], part_i[r * kGreedySplits + s]};
    if (Better(c, b)) b = c;
    sum += part_sum[r * kGreedySplits + s];
  }
  const int token = b.i == INT_MAX ? 0 : b.i;
  const double log_z = static_cast<double>(b.v) + log(sum);
  state[2 * r] = log_z;
  state[2 * r + 1] = -1.0;
  tokens[r] = token;
  logprobs[r] = static_cast<float>(
      static_cast<double>(logits[static_cast<int64_t>(r) * vocab + token]) - log_z);
}

template <typename T>
absl::Status AllocInto(DeviceBuffer<T>* buffer, int64_t count) {
  auto b = DeviceBuffer<T>::Create(count);
  if (!b.ok()) return b.status();
  *buffer = std::move(b).value();
  return absl::OkStatus();
}
template <typename T>
absl::Status AllocInto(PinnedBuffer<T>* buffer, int64_t count) {
  auto b = PinnedBuffer<T>::Create(count);
  if (!b.ok()) return b.status();
  *buffer = std::move(b).value();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuSampler>> GpuSampler::Create(int64_t max_rows, int64_t vocab) {
  if (max_rows <= 0 || vocab <= 0 || vocab > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuSampler: bad limits: ", max_rows, " rows of ", vocab, " logits"));
  }
  std::unique_ptr<GpuSampler> s(new GpuSampler);
  s->max_rows_ = max_rows;
  s->vocab_ = vocab;
  const int64_t sort_items = kSortRowsPerPass * vocab;
  absl::Status st = AllocInto(&s->rows_host_, max_rows);
  if (st.ok()) st.Update(AllocInto(&s->rows_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->penalties_, 1 << 16));
  if (st.ok()) st.Update(AllocInto(&s->work_, sort_items));
  if (st.ok()) st.Update(AllocInto(&s->row_state_, 2 * max_rows));
  if (st.ok()) st.Update(AllocInto(&s->row_max_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->keys_in_, sort_items));
  if (st.ok()) st.Update(AllocInto(&s->keys_out_, sort_items));
  if (st.ok()) st.Update(AllocInto(&s->ids_in_, sort_items));
  if (st.ok()) st.Update(AllocInto(&s->ids_out_, sort_items));
  if (st.ok()) st.Update(AllocInto(&s->tokens_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->logprobs_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->top_ids_, max_rows * kMaxTopLogprobs));
  if (st.ok()) st.Update(AllocInto(&s->top_logprobs_, max_rows * kMaxTopLogprobs));
  if (st.ok()) st.Update(AllocInto(&s->top_count_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->tokens_host_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->logprobs_host_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->top_ids_host_, max_rows * kMaxTopLogprobs));
  if (st.ok()) st.Update(AllocInto(&s->top_logprobs_host_, max_rows * kMaxTopLogprobs));
  if (st.ok()) st.Update(AllocInto(&s->top_count_host_, max_rows));
  if (st.ok()) st.Update(AllocInto(&s->greedy_v_, max_rows * kGreedySplits));
  if (st.ok()) st.Update(AllocInto(&s->greedy_i_, max_rows * kGreedySplits));
  if (st.ok()) st.Update(AllocInto(&s->greedy_sum_, max_rows * kGreedySplits));
  if (!st.ok()) return st;
  size_t temp_bytes = 0;
  BITSERVE_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, s->keys_in_.get(), s->keys_out_.get(), s->ids_in_.get(),
      s->ids_out_.get(), static_cast<int>(sort_items), 0, 64));
  if (st = AllocInto(&s->sort_temp_, static_cast<int64_t>(temp_bytes) + 256); !st.ok()) return st;
  return s;
}

absl::Status GpuSampler::Sample(const float* logits, std::span<const SamplingRow> rows,
                                std::span<const PenaltyEntry> penalties, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(rows.size());
  if (n > max_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuSampler: ", n, " rows, at most ", max_rows_));
  }
  if (n == 0) return absl::OkStatus();
  const int vocab = static_cast<int>(vocab_);
  bool any_open = false, any_top = false;
  std::vector<int> slots_per_pass((n + kSortRowsPerPass - 1) / kSortRowsPerPass, 0);
  for (int64_t r = 0; r < n; ++r) {
    SamplingRow row = rows[r];
    if (row.penalty_begin < 0 || row.penalty_end < row.penalty_begin ||
        row.penalty_end > static_cast<int64_t>(penalties.size())) {
      return absl::InvalidArgumentError(absl::StrCat("GpuSampler: row ", r, " penalty range [",
                                                     row.penalty_begin, ", ", row.penalty_end,
                                                     ") outside the list of ", penalties.size()));
    }
    const bool open = row.temperature >= kGreedyTemperature;
    any_open |= open;
    any_top |= row.top_logprobs > 0;
    row.sort_slot = open && (IsTopK(row, vocab_) || row.top_p < 1.0f)
                        ? slots_per_pass[r / kSortRowsPerPass]++
                        : -1;
    rows_host_[r] = row;
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      rows_.get(), rows_host_.get(), n * sizeof(SamplingRow), cudaMemcpyHostToDevice, stream));
  if (!penalties.empty()) {
    if (static_cast<int64_t>(penalties.size()) > penalties_.size()) {
      // Grows only when a step's penalized histories are longer than any before.
      BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
      if (absl::Status st = AllocInto(&penalties_, static_cast<int64_t>(penalties.size()) * 2);
          !st.ok()) {
        return st;
      }
    }
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(penalties_.get(), penalties.data(),
                                                  penalties.size() * sizeof(PenaltyEntry),
                                                  cudaMemcpyHostToDevice, stream));
  }
  if (!any_open && penalties.empty()) {
    // Greedy rows, nothing to penalize: the split path.
    const dim3 grid(kGreedySplits, static_cast<unsigned>(n));
    GreedyPartialMaxKernel<<<grid, kGreedyThreads, 0, stream>>>(logits, vocab, greedy_v_.get(),
                                                                greedy_i_.get());
    GreedyPartialSumKernel<<<grid, kGreedyThreads, 0, stream>>>(logits, vocab, greedy_v_.get(),
                                                                greedy_sum_.get());
    GreedyFinishKernel<<<static_cast<unsigned>((n + 127) / 128), 128, 0, stream>>>(
        logits, vocab, static_cast<int>(n), greedy_v_.get(), greedy_i_.get(), greedy_sum_.get(),
        row_state_.get(), tokens_.get(), logprobs_.get());
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  for (int64_t row0 = 0; (any_open || !penalties.empty()) && row0 < n; row0 += kSortRowsPerPass) {
    const int count = static_cast<int>(std::min<int64_t>(kSortRowsPerPass, n - row0));
    SamplePrepareKernel<<<count, kThreads, 0, stream>>>(
        logits, rows_.get(), static_cast<int>(row0), penalties_.get(), vocab, work_.get(),
        keys_in_.get(), ids_in_.get(), row_state_.get(), row_max_.get(), tokens_.get(),
        logprobs_.get());
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    const int slots = slots_per_pass[row0 / kSortRowsPerPass];
    if (slots > 0) {
      int slot_bits = 0;
      while ((1 << slot_bits) < slots) ++slot_bits;
      size_t temp_bytes = static_cast<size_t>(sort_temp_.bytes());
      BITSERVE_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
          sort_temp_.get(), temp_bytes, keys_in_.get(), keys_out_.get(), ids_in_.get(),
          ids_out_.get(), static_cast<int>(slots * vocab_), 0, 32 + slot_bits, stream));
    }
    if (any_open) {
      SampleSelectKernel<<<count, kThreads, 0, stream>>>(
          logits, rows_.get(), static_cast<int>(row0), vocab, work_.get(), ids_out_.get(),
          row_state_.get(), row_max_.get(), tokens_.get(), logprobs_.get());
      BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    }
  }
  if (any_top) {
    TopLogprobsKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        logits, rows_.get(), vocab, row_state_.get(), top_ids_.get(), top_logprobs_.get(),
        top_count_.get());
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  } else {
    BITSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(top_count_.get(), 0, n * sizeof(int32_t), stream));
  }
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      tokens_host_.get(), tokens_.get(), n * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logprobs_host_.get(), logprobs_.get(),
                                                n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(top_count_host_.get(), top_count_.get(),
                                                n * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                                stream));
  if (any_top) {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(top_ids_host_.get(), top_ids_.get(),
                                                  n * kMaxTopLogprobs * sizeof(int32_t),
                                                  cudaMemcpyDeviceToHost, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(top_logprobs_host_.get(), top_logprobs_.get(),
                                                  n * kMaxTopLogprobs * sizeof(float),
                                                  cudaMemcpyDeviceToHost, stream));
  }
  return absl::OkStatus();
}

}  // namespace bitserve::cuda
