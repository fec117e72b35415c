// `bitserve serve`: the coordinator with its local worker (the engine in this process), the
// bitserve.v1 gRPC API with health and reflection, and the Prometheus endpoint. SIGTERM or SIGINT
// drains: readiness goes NOT_SERVING, new requests get UNAVAILABLE, requests in flight finish
// until --drain-timeout, then the process exits 0.
#include <csignal>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "rpc/coordinator.h"
#include "rpc/grpc_server.h"
#include "rpc/metrics_http.h"
#include "rpc/serving_metrics.h"
#include "tools/command_line.h"

namespace bitserve::cli {
namespace {

struct ServeArgs {
  std::string model, listen = "0.0.0.0:50051", metrics_listen, device = "cpu", kv_dtype;
  int max_num_seqs = 256, max_waiting = 1024, max_batch_tokens = 8192, max_model_len = 0;
  int num_kv_blocks = 0, block_size = 16;
  double drain_timeout_s = 30;
};

absl::Status Serve(const ServeArgs& args) {
  // Signals are taken by sigwait below, so every thread started from here on blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  rpc::ServingMetrics metrics;
  rpc::CoordinatorOptions options;
  options.model_dir = args.model;
  options.metrics = &metrics;
  options.engine.device = args.device;
  ASSIGN_OR_RETURN(options.engine.kv_dtype, ParseKvDtypeFlag(args.kv_dtype));
  options.engine.block_size = args.block_size;
  options.engine.num_kv_blocks = args.num_kv_blocks;
  options.engine.max_sequences = args.max_num_seqs;
  options.engine.max_batch_tokens = args.max_batch_tokens;
  options.scheduler.max_num_seqs = args.max_num_seqs;
  options.scheduler.max_waiting = args.max_waiting;
  options.scheduler.max_num_batched_tokens = args.max_batch_tokens;
  options.scheduler.long_prefill_chunk =
      std::min(options.scheduler.long_prefill_chunk, args.max_batch_tokens);
  if (args.max_model_len > 0) {
    options.engine.max_model_len = args.max_model_len;
    options.scheduler.max_model_len = args.max_model_len;
  }
  std::unique_ptr<rpc::MetricsHttpServer> metrics_server;
  if (!args.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(metrics_server,
                     rpc::StartMetricsServer(args.metrics_listen, [&] { return metrics.RenderPrometheus(); }));
    std::cerr << "bitserve serve: metrics on http://" << args.metrics_listen << "/metrics" << std::endl;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::Coordinator> coordinator, rpc::Coordinator::Create(options));
  ASSIGN_OR_RETURN(rpc::ModelSummary info, coordinator->Info());
  std::cerr << "bitserve serve: " << info.model_dir << " on " << info.device << ", KV cache "
            << info.kv_num_blocks << " blocks of " << info.kv_block_size << " tokens = "
            << info.kv_capacity_tokens << " tokens (" << info.kv_dtype << "), max_model_len "
            << info.max_model_len << ", max_num_seqs " << info.max_num_seqs << std::endl;
  rpc::GrpcServerOptions server_options;
  server_options.listen_address = args.listen;
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::GrpcServer> server,
                   rpc::GrpcServer::Start(coordinator.get(), server_options));
  server->SetReady(coordinator->Ready());
  std::cerr << "bitserve serve: listening on " << server->address() << std::endl;

  int signal = 0;
  sigwait(&signals, &signal);
  std::cerr << "bitserve serve: " << (signal == SIGTERM ? "SIGTERM" : "SIGINT") << ", draining (up to "
            << args.drain_timeout_s << " s)" << std::endl;
  server->SetReady(false);
  coordinator->Drain(std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(args.drain_timeout_s * 1000)));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  coordinator->Shutdown();
  if (metrics_server) metrics_server->Stop();
  std::cerr << "bitserve serve: drained, exiting" << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddServeCommand(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over gRPC (bitserve.v1)");
  cmd->add_option("--model", args->model, "Checkpoint directory")->required();
  cmd->add_option("--listen", args->listen, "gRPC address host:port (port 0: any free port)");
  cmd->add_option("--metrics-listen", args->metrics_listen, "Prometheus endpoint host:port (off when empty)");
  cmd->add_option("--device", args->device, "cpu or cuda[:N]");
  AddKvDtypeOption(cmd, &args->kv_dtype);
  cmd->add_option("--max-num-seqs", args->max_num_seqs, "Sequences running at once");
  cmd->add_option("--max-waiting", args->max_waiting, "Queued requests before RESOURCE_EXHAUSTED");
  cmd->add_option("--max-batch-tokens", args->max_batch_tokens, "Tokens per engine step");
  cmd->add_option("--max-model-len", args->max_model_len, "Positions per sequence (0: the model's)");
  cmd->add_option("--num-kv-blocks", args->num_kv_blocks, "KV cache blocks (0: sized automatically)");
  cmd->add_option("--block-size", args->block_size, "Tokens per KV block");
  cmd->add_option("--drain-timeout", args->drain_timeout_s, "Seconds requests in flight get on SIGTERM");
  cmd->callback([args] { RunOrExit("serve", [&] { return Serve(*args); }); });
}

}  // namespace bitserve::cli
