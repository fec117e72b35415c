// The workload of `bitserve bench-serve` (bench/serve_driver.h): which requests are sent and when,
// following vLLM's `vllm bench serve` so that the numbers compare with the field.
//
// Requests: either vLLM's "random" dataset (prompt and output lengths drawn uniformly from
// [floor(L(1-R)), ceil(L(1+R))], prompts of random token ids sent as token ids) or a JSONL file in
// `bitserve batch`'s input format (rpc/request_json.h; "id" may be left out). Every request is
// sent with ignore_eos and max_tokens = its drawn output length, so it produces exactly that many
// tokens (unless the server's max_model_len cuts it; the report counts those).
//
// Arrivals: vLLM's get_request(): gaps drawn from a gamma distribution of shape `burstiness` and
// mean 1/rate (burstiness 1: exponential gaps, a Poisson process), accumulated, then rescaled so
// that the last request arrives at exactly N/rate, as vLLM does to steady throughput across seeds.
// An infinite rate sends everything at time 0.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rpc/generation_backend.h"

namespace bitserve::bench {

struct BenchRequest {
  rpc::GenerationInput input;
  rpc::GenerationParams params;  // ignore_eos, max_new_tokens = expected_output_len
  int prompt_len = 0;            // token ids sent; 0 for text and chat (the server's count is used)
  int expected_output_len = 0;
};

struct RandomWorkloadOptions {
  int num_prompts = 1000;
  int input_len = 1024;
  int output_len = 128;
  double input_len_range = 0;   // R in [0, 1)
  double output_len_range = 0;  // R in [0, 1)
  uint64_t seed = 0;
  int vocab_size = 0;             // token ids are drawn from [0, vocab_size) ...
  std::vector<int> excluded_ids;  // ... except these (the model's eos ids)
  // Tokens every prompt starts with (one random prefix shared by all, as vLLM's
  // --random-prefix-len), before its own input_len tokens: a prefix-caching workload.
  int prefix_len = 0;
};

// Inclusive bounds of a length drawn around `len` with range ratio `range`, as vLLM's
// get_sampling_params (low at least `min_len`). InvalidArgument naming `flag` for a bad value.
absl::StatusOr<std::pair<int, int>> LengthBounds(int len, double range, int min_len,
                                                 const std::string& flag);

// Deterministic for a given options value (seed included).
absl::StatusOr<std::vector<BenchRequest>> MakeRandomWorkload(const RandomWorkloadOptions& options);

// `num_prompts` requests from a JSONL file of `bitserve batch` input lines ({"prompt": ...} is
// enough; the file is cycled when it has fewer lines, 0 takes every line once). A line's own
// "max_tokens" is kept; otherwise the output length is drawn as for the random dataset from
// `output_len`, `output_len_range` and `seed`. Errors name the file and the line.
absl::StatusOr<std::vector<BenchRequest>> LoadJsonlWorkload(const std::filesystem::path& path,
                                                            int num_prompts, int output_len,
                                                            double output_len_range, uint64_t seed);

// Gaps between successive arrivals, before rescaling (exposed for tests): gamma(shape =
// burstiness, scale = 1 / (rate * burstiness)), so the mean is 1/rate.
std::vector<double> ArrivalGaps(int n, double rate, double burstiness, uint64_t seed);

// Arrival time of each request in seconds after the start (vLLM's cumulative, rescaled delays).
// rate = +inf: all zero. InvalidArgument for rate <= 0 or burstiness <= 0.
absl::StatusOr<std::vector<double>> ArrivalTimes(int n, double rate, double burstiness,
                                                 uint64_t seed);

}  // namespace bitserve::bench
