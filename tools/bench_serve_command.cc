// bitserve bench-serve (--server ADDR | --base-url URL | --model DIR [--device D] ...) [workload]
//                      [arrivals] [--json FILE]
// A serving benchmark in the manner of vLLM's `vllm bench serve` (bench/serve_*.h): drives a
// running `bitserve serve` through the gRPC client or its OpenAI-compatible HTTP API
// (rpc/openai_http_client.h), or an in-process coordinator with the same driver, and prints vLLM's
// "Serving Benchmark Result" block on stdout (progress on stderr). Exit status 0 when the benchmark
// ran (failed requests are counted in the report), 1 when it could not (bad flags, unreachable
// server, unreadable dataset, unwritable --json).
#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "bench/serve_driver.h"
#include "bench/serve_report.h"
#include "rpc/client.h"
#include "rpc/coordinator.h"
#include "rpc/openai_http_client.h"
#include "tools/command_line.h"
#include "tools/serving_flags.h"

namespace bitserve::cli {
namespace {

struct Args {
  std::string server, model;
  std::string base_url;      // the OpenAI-compatible HTTP API instead of gRPC
  std::string served_model;  // with --base-url: the model to name (default: the first listed)
  std::string api_key;       // with --server
  rpc::ClientTlsFiles tls;   // with --server
  ServingFlags serving;      // with --model
  std::string dataset;
  int num_prompts = -1;  // -1: 1000 random prompts, or every dataset line once
  int input_len = 1024, output_len = 128;
  double input_len_range = 0, output_len_range = 0;
  int prefix_len = 0;
  uint64_t seed = 0;
  int max_concurrency = 0;
  std::string request_rate = "inf";
  double burstiness = 1.0;
  int warmup = 0;
  std::string percentiles = "50,90,99";
  double timeout_s = 0;
  std::string json;
};

absl::StatusOr<rpc::RemoteBackendOptions> RemoteOptions(const Args& args) {
  rpc::RemoteBackendOptions options;
  options.api_key = ApiKey(args.api_key);
  ASSIGN_OR_RETURN(options.credentials, rpc::GrpcChannelCredentials(args.tls));
  return options;
}

absl::StatusOr<std::unique_ptr<rpc::GenerationBackend>> MakeBackend(const Args& args) {
  if (args.model.empty() + args.server.empty() + args.base_url.empty() != 2) {
    return absl::InvalidArgumentError(
        "give exactly one of --server ADDR, --base-url URL and --model DIR");
  }
  if (!args.base_url.empty()) {
    rpc::OpenAiHttpClientOptions options;
    options.api_key = ApiKey(args.api_key);
    options.ca_file = args.tls.ca;
    options.cert_file = args.tls.cert;
    options.key_file = args.tls.key;
    options.model = args.served_model;
    ASSIGN_OR_RETURN(std::unique_ptr<rpc::OpenAiHttpBackend> http,
                     rpc::OpenAiHttpBackend::Connect(args.base_url, options));
    return std::unique_ptr<rpc::GenerationBackend>(std::move(http));
  }
  if (!args.server.empty()) {
    ASSIGN_OR_RETURN(rpc::RemoteBackendOptions options, RemoteOptions(args));
    absl::StatusOr<std::unique_ptr<rpc::RemoteBackend>> remote =
        rpc::RemoteBackend::Connect(args.server, options);
    if (!remote.ok()) {
      return absl::Status(remote.status().code(),
                          absl::StrCat("cannot reach the server at ", args.server, ": ",
                                       remote.status().message()));
    }
    return std::unique_ptr<rpc::GenerationBackend>(*std::move(remote));
  }
  // `bitserve serve`'s flags and defaults (tools/serving_flags.h), so that --model and --server
  // runs compare.
  ASSIGN_OR_RETURN(rpc::CoordinatorOptions options, ToCoordinatorOptions(args.serving, args.model));
  options.log_requests = false;
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::Coordinator> coordinator,
                   rpc::Coordinator::Create(options));
  return std::unique_ptr<rpc::GenerationBackend>(std::move(coordinator));
}

absl::StatusOr<double> ParseRate(const std::string& text) {
  double rate;
  if (!absl::SimpleAtod(text, &rate) || !(rate > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--request-rate: expected a positive number or inf, got \"", text, "\""));
  }
  return rate;
}

absl::StatusOr<std::vector<double>> ParsePercentiles(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double p;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &p) || !(p >= 0 && p <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--metric-percentiles: expected numbers in [0, 100] separated by commas, got \"", text,
          "\""));
    }
    out.push_back(p);
  }
  return out;
}

absl::StatusOr<std::vector<bench::BenchRequest>> MakeWorkload(const Args& args,
                                                              const rpc::ModelSummary& info) {
  if (!args.dataset.empty()) {
    return bench::LoadJsonlWorkload(args.dataset, std::max(args.num_prompts, 0), args.output_len,
                                    args.output_len_range, args.seed);
  }
  if (info.vocab_size <= 0) {
    // An OpenAI-compatible server other than bitserve's lists no vocabulary size.
    return absl::FailedPreconditionError(absl::StrCat(
        "random prompts need the model's vocabulary size, and ",
        args.base_url.empty() ? "the server" : args.base_url + "/v1/models",
        " does not give it (bitserve's model card has bitserve.vocab_size): use --dataset "
        "FILE.jsonl with text prompts"));
  }
  bench::RandomWorkloadOptions options;
  options.num_prompts = args.num_prompts < 0 ? 1000 : args.num_prompts;
  options.input_len = args.input_len;
  options.output_len = args.output_len;
  options.input_len_range = args.input_len_range;
  options.prefix_len = args.prefix_len;
  options.output_len_range = args.output_len_range;
  options.seed = args.seed;
  options.vocab_size = info.vocab_size;
  options.excluded_ids = info.eos_token_ids;
  return bench::MakeRandomWorkload(options);
}

nlohmann::ordered_json Parameters(const Args& args, const rpc::ModelSummary& info, double rate,
                                  const std::vector<double>& percentiles, int num_requests) {
  nlohmann::ordered_json p;
  p["date"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  p["backend"] = !args.base_url.empty() ? "openai-http"
                 : args.server.empty()  ? "in-process"
                                        : "server";
  if (!args.server.empty()) p["server"] = args.server;
  if (!args.base_url.empty()) p["base_url"] = args.base_url;
  p["model"] = info.model_dir;
  p["device"] = info.device;
  p["max_model_len"] = info.max_model_len;
  p["max_num_seqs"] = info.max_num_seqs;
  p["kv_capacity_tokens"] = info.kv_capacity_tokens;
  p["dataset"] = args.dataset.empty() ? "random" : args.dataset;
  p["num_prompts"] = num_requests;
  if (args.dataset.empty()) {
    p["input_len"] = args.input_len;
    p["input_len_range"] = args.input_len_range;
    p["prefix_len"] = args.prefix_len;
  }
  p["output_len"] = args.output_len;
  p["output_len_range"] = args.output_len_range;
  p["seed"] = args.seed;
  p["max_concurrency"] = args.max_concurrency > 0 ? nlohmann::ordered_json(args.max_concurrency)
                                                  : nlohmann::ordered_json();
  p["request_rate"] =
      std::isinf(rate) ? nlohmann::ordered_json("inf") : nlohmann::ordered_json(rate);
  p["burstiness"] = args.burstiness;
  p["num_warmups"] = args.warmup;
  p["percentiles"] = percentiles;
  p["timeout_s"] = args.timeout_s;
  return p;
}

absl::Status Run(const Args& args) {
  ASSIGN_OR_RETURN(double rate, ParseRate(args.request_rate));
  ASSIGN_OR_RETURN(std::vector<double> percentiles, ParsePercentiles(args.percentiles));
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::GenerationBackend> backend, MakeBackend(args));
  ASSIGN_OR_RETURN(rpc::ModelSummary info, backend->Info());
  ASSIGN_OR_RETURN(std::vector<bench::BenchRequest> requests, MakeWorkload(args, info));
  int longest = 0;
  for (const bench::BenchRequest& r : requests) {
    longest = std::max(longest, r.prompt_len + r.expected_output_len);
  }
  if (longest > info.max_model_len) {
    std::cerr << "bitserve bench-serve: note: requests of up to " << longest
              << " prompt + output tokens, the server's max_model_len is " << info.max_model_len
              << ": longer ones are cut short or rejected" << std::endl;
  }
  std::cerr << "bitserve bench-serve: " << requests.size() << " requests to "
            << (!args.base_url.empty() ? args.base_url
                : args.server.empty()  ? "in-process " + info.model_dir
                                       : args.server)
            << " (" << info.device << "), request rate " << rate << ", burstiness "
            << args.burstiness << ", max concurrency "
            << (args.max_concurrency > 0 ? absl::StrCat(args.max_concurrency) : "none")
            << std::endl;

  bench::DriverOptions options;
  options.max_concurrency = args.max_concurrency;
  options.request_rate = rate;
  options.burstiness = args.burstiness;
  options.seed = args.seed;
  options.num_warmups = args.warmup;
  options.timeout_s = args.timeout_s;
  options.progress = &std::cerr;
  ASSIGN_OR_RETURN(bench::DriverResult result,
                   bench::RunServeBenchmark(*backend, requests, options));
  const bench::ServeMetrics metrics =
      bench::ComputeMetrics(result.records, result.duration_s, percentiles);
  bench::ReportContext context;
  context.max_concurrency = args.max_concurrency;
  context.request_rate = rate;
  context.warmup_failed = result.warmup_failed;
  std::cout << bench::FormatReport(metrics, result.records, context) << std::flush;
  if (!args.json.empty()) {
    const nlohmann::ordered_json report = bench::ReportJson(
        metrics, result.records, context,
        Parameters(args, info, rate, percentiles, static_cast<int>(requests.size())));
    std::ofstream out(args.json);
    out << report.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", args.json));
  }
  return absl::OkStatus();
}

}  // namespace

void AddBenchServeCommand(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("bench-serve",
                         "Serving benchmark (as vLLM's `vllm bench serve`): TTFT, TPOT, ITL, E2EL, "
                         "throughput");
  auto* server = cmd->add_option("--server", args->server, "host:port of a `bitserve serve`");
  AddApiKeyOption(cmd, &args->api_key);
  AddClientTlsOptions(cmd, &args->tls);
  auto* model = cmd->add_option("--model", args->model,
                                "Checkpoint directory: benchmark an in-process coordinator");
  model->excludes(server);
  auto* base_url = cmd->add_option(
      "--base-url", args->base_url,
      "http(s)://host:port of an OpenAI-compatible server (`bitserve serve --http-listen`): "
      "streamed /v1/completions, one connection per request");
  base_url->excludes(server);
  base_url->excludes(model);
  cmd->add_option("--served-model-name", args->served_model,
                  "With --base-url: the model to name in requests (default: the first one "
                  "/v1/models lists)");
  AddServingFlags(cmd, &args->serving, "With --model: ");
  cmd->add_option("--dataset", args->dataset,
                  "JSONL prompts ({\"prompt\": ...}, or `bitserve batch` input lines) instead of "
                  "random token ids");
  cmd->add_option("--num-prompts", args->num_prompts,
                  "Requests measured (default 1000; with --dataset every line once)");
  cmd->add_option("--input-len", args->input_len, "Prompt tokens of the random dataset");
  cmd->add_option("--output-len", args->output_len, "Tokens generated per request");
  cmd->add_option("--prefix-len", args->prefix_len,
                  "Random dataset: a prefix of this many tokens shared by every prompt, before "
                  "its --input-len own (prefix caching; vLLM's --random-prefix-len)");
  cmd->add_option("--input-len-range", args->input_len_range,
                  "R in [0, 1): prompt lengths uniform in [L(1-R), L(1+R)]");
  cmd->add_option("--output-len-range", args->output_len_range,
                  "R in [0, 1): output lengths uniform in [L(1-R), L(1+R)]");
  cmd->add_option("--seed", args->seed, "Seed of prompts, lengths and arrival times");
  cmd->add_option("--max-concurrency", args->max_concurrency,
                  "Requests in flight at most (0: no limit)");
  cmd->add_option("--request-rate", args->request_rate,
                  "Requests per second, Poisson arrivals (inf: all at once)");
  cmd->add_option("--burstiness", args->burstiness,
                  "Gamma shape of the arrival gaps (1: Poisson; < 1 burstier, > 1 more regular)");
  cmd->add_option("--warmup", args->warmup, "Requests sent first and not measured");
  cmd->add_option("--metric-percentiles", args->percentiles, "Percentiles reported, e.g. 50,90,99");
  cmd->add_option("--timeout", args->timeout_s,
                  "Seconds before the run is cut short; what is left counts as failed (0: none)");
  cmd->add_option("--json", args->json, "Write every number and the parameters as JSON");
  cmd->callback([args] { RunOrExit("bench-serve", [&] { return Run(*args); }); });
}

}  // namespace bitserve::cli
