#include "bench/serve_workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "rpc/request_json.h"

namespace bitserve::bench {
namespace {

// One generator per purpose, so that e.g. the arrival times do not change with the prompt lengths.
enum Stream : uint64_t { kLengths = 0, kArrivals = 1, kDatasetLengths = 2, kPrefix = 3 };

std::mt19937_64 Generator(uint64_t seed, Stream stream) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(stream)};
  return std::mt19937_64(seq);
}

// What every benchmark request asks for: exactly `output_len` tokens.
void SetFixedLength(rpc::GenerationParams& params, int output_len) {
  params.max_new_tokens = output_len;
  params.ignore_eos = true;
}

}  // namespace

absl::StatusOr<std::pair<int, int>> LengthBounds(int len, double range, int min_len,
                                                 const std::string& flag) {
  if (!(range >= 0 && range < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "-range must be in [0, 1), got ", range));
  }
  if (len < min_len) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be >= ", min_len, ", got ", len));
  }
  const int low = std::max(min_len, static_cast<int>(std::floor(len * (1 - range))));
  const int high = std::max(low, static_cast<int>(std::ceil(len * (1 + range))));
  return std::pair{low, high};
}

absl::StatusOr<std::vector<BenchRequest>> MakeRandomWorkload(const RandomWorkloadOptions& o) {
  if (o.num_prompts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--num-prompts must be >= 1, got ", o.num_prompts));
  }
  absl::StatusOr<std::pair<int, int>> in =
      LengthBounds(o.input_len, o.input_len_range, 1, "--input-len");
  if (!in.ok()) return in.status();
  absl::StatusOr<std::pair<int, int>> out =
      LengthBounds(o.output_len, o.output_len_range, 1, "--output-len");
  if (!out.ok()) return out.status();
  std::vector<int32_t> allowed;
  for (int id = 0; id < o.vocab_size; ++id) {
    if (std::find(o.excluded_ids.begin(), o.excluded_ids.end(), id) == o.excluded_ids.end()) {
      allowed.push_back(id);
    }
  }
  if (allowed.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no token ids to draw prompts from (vocab_size ", o.vocab_size, ")"));
  }
  if (o.prefix_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefix-len must be >= 0, got ", o.prefix_len));
  }
  // The shared prefix from a stream of its own: prompts without one are what they always were.
  std::vector<int32_t> prefix(o.prefix_len);
  {
    std::mt19937_64 prefix_rng = Generator(o.seed, kPrefix);
    std::uniform_int_distribution<size_t> pick(0, allowed.size() - 1);
    for (int32_t& id : prefix) id = allowed[pick(prefix_rng)];
  }
  // Lengths first for all requests, then the tokens (vLLM's order), from one seeded generator.
  std::mt19937_64 rng = Generator(o.seed, kLengths);
  std::uniform_int_distribution<int> input_len(in->first, in->second);
  std::uniform_int_distribution<int> output_len(out->first, out->second);
  std::uniform_int_distribution<size_t> token(0, allowed.size() - 1);
  std::vector<BenchRequest> requests(o.num_prompts);
  for (BenchRequest& r : requests) r.prompt_len = input_len(rng);
  for (BenchRequest& r : requests) r.expected_output_len = output_len(rng);
  for (BenchRequest& r : requests) {
    std::vector<int32_t> ids(r.prompt_len);
    for (int32_t& id : ids) id = allowed[token(rng)];
    ids.insert(ids.begin(), prefix.begin(), prefix.end());
    r.prompt_len = static_cast<int>(ids.size());
    r.input = rpc::TokenInput{std::move(ids)};
    SetFixedLength(r.params, r.expected_output_len);
  }
  return requests;
}

absl::StatusOr<std::vector<BenchRequest>> LoadJsonlWorkload(const std::filesystem::path& path,
                                                            int num_prompts, int output_len,
                                                            double output_len_range,
                                                            uint64_t seed) {
  if (num_prompts < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--num-prompts must be >= 0, got ", num_prompts));
  }
  absl::StatusOr<std::pair<int, int>> out =
      LengthBounds(output_len, output_len_range, 1, "--output-len");
  if (!out.ok()) return out.status();
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::vector<BenchRequest> lines;
  std::string line;
  for (int number = 1; std::getline(file, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto fail = [&](absl::string_view message) {
      return absl::InvalidArgumentError(absl::StrCat(path.string(), ":", number, ": ", message));
    };
    // batch lines need an "id"; a benchmark prompt file need not have one.
    nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool has_max_tokens = parsed.is_object() && parsed.contains("max_tokens");
    if (parsed.is_object() && !parsed.contains("id")) {
      parsed["id"] = number;
      line = parsed.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    std::optional<nlohmann::json> id;
    absl::StatusOr<rpc::JsonRequest> parsed_line = rpc::ParseRequestLine(line, &id);
    if (!parsed_line.ok()) return fail(parsed_line.status().message());
    BenchRequest r;
    r.input = std::move(parsed_line->input);
    r.params = std::move(parsed_line->params);
    if (auto* ids = std::get_if<rpc::TokenInput>(&r.input)) {
      r.prompt_len = static_cast<int>(ids->ids.size());
    }
    r.expected_output_len = has_max_tokens ? r.params.max_new_tokens : 0;  // 0: drawn below
    lines.push_back(std::move(r));
  }
  if (lines.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": no requests in the file"));
  }
  const int n = num_prompts == 0 ? static_cast<int>(lines.size()) : num_prompts;
  std::mt19937_64 rng = Generator(seed, kDatasetLengths);
  std::uniform_int_distribution<int> output(out->first, out->second);
  std::vector<BenchRequest> requests;
  requests.reserve(n);
  for (int i = 0; i < n; ++i) {
    BenchRequest r = lines[i % lines.size()];
    const int drawn = output(rng);  // drawn for every request, so lengths do not shift by line
    if (r.expected_output_len == 0) r.expected_output_len = drawn;
    SetFixedLength(r.params, r.expected_output_len);
    requests.push_back(std::move(r));
  }
  return requests;
}

std::vector<double> ArrivalGaps(int n, double rate, double burstiness, uint64_t seed) {
  std::vector<double> gaps(std::max(n, 0), 0.0);
  if (std::isinf(rate)) return gaps;
  if (std::isinf(burstiness)) {  // the limit: perfectly regular arrivals
    std::fill(gaps.begin(), gaps.end(), 1.0 / rate);
    return gaps;
  }
  std::mt19937_64 rng = Generator(seed, kArrivals);
  std::gamma_distribution<double> gap(burstiness, 1.0 / (rate * burstiness));
  for (double& g : gaps) g = gap(rng);
  return gaps;
}

absl::StatusOr<std::vector<double>> ArrivalTimes(int n, double rate, double burstiness,
                                                 uint64_t seed) {
  if (!(rate > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--request-rate must be > 0 (or inf), got ", rate));
  }
  if (!(burstiness > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--burstiness must be > 0, got ", burstiness));
  }
  std::vector<double> times = ArrivalGaps(n, rate, burstiness, seed);
  for (size_t i = 1; i < times.size(); ++i) times[i] += times[i - 1];
  // vLLM rescales so that the last arrival is at exactly n / rate: the sum of n exponential gaps
  // is off by a few percent, which would show up as throughput noise between seeds.
  if (!times.empty() && times.back() > 0) {
    const double scale = (n / rate) / times.back();
    for (double& t : times) t *= scale;
  }
  return times;
}

}  // namespace bitserve::bench
