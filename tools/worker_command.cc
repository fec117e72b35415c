// `bitserve worker --coordinator ADDR [--device cpu|cuda:N] [--model DIR]`: joins a `bitserve
// serve --worker-listen ADDR` from another process or host, loads the model on its device and
// runs the coordinator's steps until told to stop. Exit 0 when the coordinator shuts it down; an
// error (refused, coordinator gone, load failed) exits 1 with the reason.
#include <iostream>
#include <memory>
#include <string>

#include "rpc/worker.h"
#include "tools/command_line.h"

namespace bitserve::cli {

void AddWorkerCommand(CLI::App& app) {
  auto options = std::make_shared<rpc::WorkerOptions>();
  auto connect_timeout_s = std::make_shared<double>(30);
  auto secret_file = std::make_shared<std::string>();
  auto tls = std::make_shared<rpc::ClientTlsFiles>();
  CLI::App* cmd =
      app.add_subcommand("worker", "Join a coordinator (bitserve serve --worker-listen)");
  cmd->add_option("--coordinator", options->coordinator_address,
                  "The coordinator's worker address host:port")
      ->required();
  cmd->add_option("--device", options->device, "cpu or cuda[:N]");
  cmd->add_option(
      "--model", options->model_dir,
      "Checkpoint directory here (default: the coordinator's path, e.g. a shared volume)");
  cmd->add_option("--worker-id", options->worker_id,
                  "Name in the coordinator's logs (default host:pid:device)");
  cmd->add_option("--connect-timeout", *connect_timeout_s,
                  "Seconds to wait for the coordinator (default 30)");
  cmd->add_option("--transport-host", options->transport_host,
                  "This host's address as the other pipeline stages reach it (default 127.0.0.1)");
  cmd->add_option("--secret-file", *secret_file,
                  "The coordinator's join secret (serve --worker-secret-file), first line of this "
                  "file (default: $BITSERVE_WORKER_SECRET)");
  AddClientTlsOptions(cmd, tls.get());
  cmd->callback([options, connect_timeout_s, secret_file, tls] {
    options->connect_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(*connect_timeout_s * 1000));
    RunOrExit("worker", [&]() -> absl::Status {
      absl::StatusOr<std::string> secret = WorkerSecret(*secret_file, "--secret-file");
      if (!secret.ok()) return secret.status();
      options->join_secret = *secret;
      absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
          rpc::GrpcChannelCredentials(*tls);
      if (!credentials.ok()) return credentials.status();
      options->credentials = *credentials;
      return rpc::RunWorker(*options);
    });
  });
}

}  // namespace bitserve::cli
