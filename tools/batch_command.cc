// bitserve batch (--model DIR | --server ADDR) --input IN.jsonl --output OUT.jsonl
//                [--max-in-flight N] [--device cpu|cuda[:N]] [--kv-dtype T] [--max-num-seqs N] ...
// Offline generation over a JSONL file (tools/batch_job.h): in-process on the model with --model,
// or through a running `bitserve serve` with --server. Exit status:
//   0  every id of the input has its final record: a result or a permanent error (per-line
//      errors are in the output and the summary);
//   75 (EX_TEMPFAIL) the job ran to the end but some ids failed with retryable errors after
//      their last try: run the same command again to retry them;
//   1  the job could not run to the end (unreadable input, unreachable backend, output not
//      writable); what was written stays, and a rerun resumes.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "rpc/client.h"
#include "rpc/coordinator.h"
#include "tools/batch_job.h"
#include "tools/command_line.h"
#include "tools/serving_flags.h"

namespace bitserve::cli {
namespace {

constexpr int kExitRetryLater = 75;  // sysexits.h EX_TEMPFAIL

struct Args {
  std::string model, server, input, output;
  std::string api_key;      // with --server
  rpc::ClientTlsFiles tls;  // with --server
  int max_in_flight = 0;
  ServingFlags serving;  // with --model
};

absl::StatusOr<rpc::RemoteBackendOptions> RemoteOptions(const Args& args) {
  rpc::RemoteBackendOptions options;
  options.api_key = ApiKey(args.api_key);
  ASSIGN_OR_RETURN(options.credentials, rpc::GrpcChannelCredentials(args.tls));
  return options;
}

absl::StatusOr<std::unique_ptr<rpc::GenerationBackend>> MakeBackend(const Args& args) {
  if (args.model.empty() == args.server.empty()) {
    return absl::InvalidArgumentError("give exactly one of --model DIR and --server ADDR");
  }
  if (!args.server.empty()) {
    ASSIGN_OR_RETURN(rpc::RemoteBackendOptions options, RemoteOptions(args));
    absl::StatusOr<std::unique_ptr<rpc::RemoteBackend>> remote =
        rpc::RemoteBackend::Connect(args.server, options);
    if (!remote.ok()) {
      return absl::Status(remote.status().code(),
                          absl::StrCat("cannot reach the backend at ", args.server, ": ",
                                       remote.status().message()));
    }
    return std::unique_ptr<rpc::GenerationBackend>(*std::move(remote));
  }
  ASSIGN_OR_RETURN(rpc::CoordinatorOptions options, ToCoordinatorOptions(args.serving, args.model));
  options.log_requests = false;  // the output file has every result; stderr keeps the progress
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::Coordinator> coordinator,
                   rpc::Coordinator::Create(options));
  return std::unique_ptr<rpc::GenerationBackend>(std::move(coordinator));
}

absl::Status Run(const Args& args) {
  if (args.max_in_flight < 0) return absl::InvalidArgumentError("--max-in-flight must be >= 0");
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::GenerationBackend> backend, MakeBackend(args));
  BatchJobOptions options;
  options.input = args.input;
  options.output = args.output;
  options.max_in_flight = args.max_in_flight;
  options.log = &std::cerr;
  options.progress_bar = ::isatty(STDERR_FILENO) == 1;
  absl::StatusOr<BatchSummary> summary = RunBatchJob(*backend, options);
  if (!summary.ok()) return summary.status();
  if (summary->counts.retry_later > 0) {
    std::cerr << "bitserve batch: " << summary->counts.retry_later
              << " ids have no result yet (retryable errors after their last try); run the same "
                 "command again to retry them"
              << std::endl;
    std::exit(kExitRetryLater);
  }
  return absl::OkStatus();
}

}  // namespace

void AddBatchCommand(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "batch", "Generate for every line of a JSONL file, appending results to another (resumable)");
  auto* model = cmd->add_option("--model", args->model, "Checkpoint directory: run in-process");
  auto* server = cmd->add_option("--server", args->server, "host:port of a `bitserve serve`");
  AddApiKeyOption(cmd, &args->api_key);
  AddClientTlsOptions(cmd, &args->tls);
  model->excludes(server);
  cmd->add_option("--input", args->input,
                  "JSONL requests: {\"id\", \"prompt\" | \"messages\" | \"prompt_ids\", "
                  "sampling params}")
      ->required();
  cmd->add_option("--output", args->output,
                  "JSONL results, appended as they complete; ids already there are skipped")
      ->required();
  cmd->add_option("--max-in-flight", args->max_in_flight,
                  "Requests submitted at once (default: what fills the server)");
  AddServingFlags(cmd, &args->serving, "With --model: ");
  cmd->callback([args] { RunOrExit("batch", [&] { return Run(*args); }); });
}

}  // namespace bitserve::cli
