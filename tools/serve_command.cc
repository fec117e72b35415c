// `bitserve serve`: the coordinator with its local worker (the engine in this process), or with a
// remote worker that joins over the internal protocol (--worker-listen), the bitserve.v1 gRPC API
// with health and reflection, and the Prometheus endpoint. SIGTERM or SIGINT
// drains: readiness goes NOT_SERVING, new requests get UNAVAILABLE, requests in flight finish
// until --drain-timeout, then the process exits 0.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "rpc/coordinator.h"
#include "rpc/deferred_backend.h"
#include "rpc/grpc_server.h"
#include "rpc/metrics_http.h"
#include "rpc/openai_http.h"
#include "rpc/serving_metrics.h"
#include "rpc/worker_hub.h"
#include "runtime/checkpoint/model_config.h"
#include "runtime/text/model_tokenizer.h"
#include "tools/command_line.h"
#include "tools/pipeline_flags.h"
#include "tools/serving_flags.h"

namespace bitserve::cli {
namespace {

struct ServeArgs {
  std::string model, listen = "0.0.0.0:50051", metrics_listen;
  std::string health_listen;  // plaintext grpc.health.v1 only, for probes (off when empty)
  std::string http_listen, served_model_name;  // the OpenAI-compatible HTTP API (off when empty)
  std::string api_key_file;                    // empty: no keys asked
  rpc::ServerTlsFiles tls;                     // of the gRPC and HTTP APIs
  std::string worker_secret_file;              // workers' join secret
  rpc::ServerTlsFiles worker_tls;              // of the worker link (--worker-listen)
  bool metrics_auth = false;
  ServingFlags serving;
  double drain_timeout_s = 30;
  std::string worker_listen;  // empty: the engine runs in this process
  int worker_heartbeat_timeout_ms = 3000;
  int pipeline_stages = 1;
  int expert_parallel = 1;
  std::string pp_transfer = "int8";
  std::string ep_results = "f32";
  std::string pp_transport = "auto";
  std::string pipeline_split;  // empty: balanced by decode bytes
};

// `bitserve worker` processes of this machine, started by serve and stopped with it. One that exits
// before the pipeline first became ready fails serve (a setting is wrong: a GPU that is not there,
// a model it cannot read); one that exits later is started again (the coordinator rebuilds the
// pipeline around it, as around any replacement). One the coordinator declares lost while its
// process lives on (hung: stopped, deadlocked, stuck in a driver call) is killed first, so that a
// fresh one takes its place instead of the pipeline waiting for it forever.
class LocalWorkers {
 public:
  // Device "cuda" puts worker i on GPU i; "cuda:N" (and "cpu") puts every worker there.
  // Workers are numbered by pipeline slot: stage * expert_parallel + EP rank.
  // `secret`: the join secret, handed to each worker in its environment (not its command line,
  // which other users of the machine can read).
  absl::Status Start(int count, const std::string& coordinator, const std::string& device,
                     const std::string& secret) {
    env_.clear();
    for (char** e = environ; *e != nullptr; ++e) {
      if (!absl::StartsWith(*e, "BITSERVE_WORKER_SECRET=")) env_.push_back(*e);
    }
    env_.push_back("BITSERVE_WORKER_SECRET=" + secret);
    char self[4096] = {};
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return absl::InternalError("cannot find this executable (/proc/self/exe)");
    for (int i = 0; i < count; ++i) {
      Worker w;
      w.id = absl::StrCat("local-", i);
      w.args = {self,          "worker",   "--coordinator",
                coordinator,   "--device", device == "cuda" ? absl::StrCat("cuda:", i) : device,
                "--worker-id", w.id};
      RETURN_IF_ERROR(Spawn(w));
      workers_.push_back(std::move(w));
    }
    return absl::OkStatus();
  }
  // Reaps workers that exited. Before `ready`: FAILED_PRECONDITION naming the first (its own error
  // is in the log above). Afterwards: starts each again, at most once per 5 s.
  absl::Status Check(bool ready) {
    for (Worker& w : workers_) {
      int status = 0;
      if (w.pid > 0 && waitpid(w.pid, &status, WNOHANG) == w.pid) {
        w.pid = -1;
        w.exit = WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
                                   : absl::StrCat("signal ", WTERMSIG(status));
        if (!w.killed_because.empty()) {
          w.exit = absl::StrCat("killed: hung, ", std::exchange(w.killed_because, std::string()));
        }
        if (!ready) {
          return absl::FailedPreconditionError(absl::StrCat("local worker ", w.id, " (", w.args[5],
                                                            ") ended (", w.exit,
                                                            ") before the pipeline was ready"));
        }
      }
      if (w.pid < 0 && ready &&
          std::chrono::steady_clock::now() - w.started > std::chrono::seconds(5)) {
        std::cerr << "bitserve serve: local worker " << w.id << " ended (" << w.exit
                  << "); starting it again" << std::endl;
        RETURN_IF_ERROR(Spawn(w));
      }
    }
    return absl::OkStatus();
  }
  // The coordinator found worker `id` hung (WorkerHub::TakeHungWorkers): if it is one of these,
  // its process is killed now; Check reaps it (and starts another once serving).
  void Kill(const std::string& id, const std::string& reason) {
    for (Worker& w : workers_) {
      if (w.id != id || w.pid <= 0) continue;
      std::cerr << "bitserve serve: local worker " << w.id << " (pid " << w.pid << ") is hung ("
                << reason << "); killing it" << std::endl;
      kill(w.pid, SIGKILL);
      w.killed_because = reason;
    }
  }
  // After the coordinator told them to exit: wait a little, then make sure.
  void Stop() {
    for (Worker& w : workers_) {
      if (w.pid <= 0) continue;
      for (int i = 0; i < 50 && waitpid(w.pid, nullptr, WNOHANG) == 0; ++i) usleep(100000);
      if (waitpid(w.pid, nullptr, WNOHANG) == 0) {
        kill(w.pid, SIGKILL);
        waitpid(w.pid, nullptr, 0);
      }
    }
    workers_.clear();
  }
  ~LocalWorkers() { Stop(); }

 private:
  struct Worker {
    std::string id;
    std::vector<std::string> args;
    pid_t pid = -1;
    std::chrono::steady_clock::time_point started;
    std::string exit;
    std::string killed_because;  // set by Kill until Check reaps the process
  };
  absl::Status Spawn(Worker& w) {
    // Built before fork: the child only calls async-signal-safe functions.
    std::vector<char*> envp;
    for (std::string& e : env_) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      // The child must not inherit the blocked SIGTERM/SIGINT of the server's threads.
      sigset_t none;
      sigemptyset(&none);
      pthread_sigmask(SIG_SETMASK, &none, nullptr);
      std::vector<std::string> args = w.args;
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    w.pid = pid;
    w.started = std::chrono::steady_clock::now();
    return absl::OkStatus();
  }
  std::vector<Worker> workers_;
  std::vector<std::string> env_;  // the workers' environment
};

// 32 random hex digits.
std::string RandomSecret() {
  std::random_device device;
  std::string secret;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&secret, absl::Hex(device(), absl::kZeroPad8));
  return secret;
}

// SIGTERM/SIGINT taken within `timeout`, or 0.
int TakeSignal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  const timespec ts{static_cast<time_t>(timeout.count() / 1000),
                    static_cast<long>(timeout.count() % 1000) * 1000000};
  const int signal = sigtimedwait(&signals, nullptr, &ts);
  return signal > 0 ? signal : 0;
}

const char* SignalName(int signal) { return signal == SIGTERM ? "SIGTERM" : "SIGINT"; }

absl::Status Serve(const ServeArgs& args) {
  // Signals are taken by sigtimedwait below, so every thread started from here on blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  rpc::ServingMetrics metrics;
  ASSIGN_OR_RETURN(rpc::CoordinatorOptions options, ToCoordinatorOptions(args.serving, args.model));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   rpc::GrpcServerCredentials(args.tls));
  rpc::ApiKeys api_keys;
  if (!args.api_key_file.empty()) {
    ASSIGN_OR_RETURN(api_keys, rpc::ApiKeys::Load(args.api_key_file));
    std::cerr << "bitserve serve: API keys required (" << api_keys.size() << " in "
              << args.api_key_file << (args.metrics_auth ? ", metrics included" : "") << ")"
              << std::endl;
  } else if (args.metrics_auth) {
    return absl::InvalidArgumentError("--metrics-auth needs --api-key-file");
  }
  options.metrics = &metrics;
  std::unique_ptr<rpc::MetricsHttpServer> metrics_server;
  if (!args.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(metrics_server,
                     rpc::StartMetricsServer(
                         args.metrics_listen, [&] { return metrics.RenderPrometheus(); },
                         args.metrics_auth ? &api_keys : nullptr));
    // The bound port (the address may ask for port 0, any free one).
    const std::string& host = metrics_server->host();
    std::cerr << "bitserve serve: metrics on http://"
              << (host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host) << ":"
              << metrics_server->port() << "/metrics" << std::endl;
  }
  // The API is bound first (liveness answers, readiness NOT_SERVING, calls UNAVAILABLE
  // "starting") while the model loads or the worker joins; "listening on" is printed once calls
  // are served.
  rpc::DeferredBackend backend;
  rpc::GrpcServerOptions server_options;
  server_options.listen_address = args.listen;
  server_options.service.metrics = &metrics;
  server_options.service.api_keys = &api_keys;
  server_options.credentials = credentials;
  server_options.health_listen_address = args.health_listen;
  ASSIGN_OR_RETURN(std::unique_ptr<rpc::GrpcServer> server,
                   rpc::GrpcServer::Start(&backend, server_options));
  if (!server->health_address().empty()) {
    std::cerr << "bitserve serve: health (grpc.health.v1, plaintext) on "
              << server->health_address() << std::endl;
  }

  std::unique_ptr<rpc::WorkerHub> hub;
  std::unique_ptr<grpc::Server> worker_server;
  std::unique_ptr<rpc::Coordinator> coordinator;
  auto stop_workers = [&] {
    if (hub) hub->Shutdown();
    if (worker_server) {
      worker_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
      worker_server->Wait();
    }
  };
  if (args.expert_parallel < 1 || args.pipeline_stages < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--pipeline-stages (", args.pipeline_stages,
                                                   ") and --expert-parallel (",
                                                   args.expert_parallel, ") must be >= 1"));
  }
  std::vector<int> pipeline_split;
  if (!args.pipeline_split.empty()) {
    ASSIGN_OR_RETURN(pipeline_split, ParseSplitFlag(args.pipeline_split, args.pipeline_stages));
  }
  // More than one worker without remote workers: this machine's workers, one process per stage
  // and expert-parallel rank.
  const int num_workers = args.pipeline_stages * args.expert_parallel;
  LocalWorkers local_workers;
  std::string worker_listen = args.worker_listen;
  const bool spawn_workers = worker_listen.empty() && num_workers > 1;
  if (spawn_workers) worker_listen = "127.0.0.1:0";
  if (worker_listen.empty()) {
    ASSIGN_OR_RETURN(coordinator, rpc::Coordinator::Create(options));
  } else {
    rpc::WorkerHubOptions hub_options;
    hub_options.model_dir = args.model;
    hub_options.engine = options.engine;
    hub_options.heartbeat_timeout = std::chrono::milliseconds(args.worker_heartbeat_timeout_ms);
    hub_options.heartbeat_interval =
        std::min(std::chrono::milliseconds(500), hub_options.heartbeat_timeout / 4);
    hub_options.num_stages = args.pipeline_stages;
    hub_options.pipeline_split = pipeline_split;
    hub_options.expert_parallel = args.expert_parallel;
    hub_options.metrics = &metrics;
    // Local workers get a fresh random secret (another local process cannot join in their
    // place); remote ones the shared one of --worker-secret-file.
    ASSIGN_OR_RETURN(hub_options.join_secret,
                     WorkerSecret(args.worker_secret_file, "--worker-secret-file"));
    if (hub_options.join_secret.empty() && spawn_workers) hub_options.join_secret = RandomSecret();
    ASSIGN_OR_RETURN(hub_options.pp_transfer, ParseTransferDtype(args.pp_transfer));
    if (args.ep_results == "bf16") {
      hub_options.expert_results = ExpertResultDtype::kBf16;
    } else if (args.ep_results != "f32") {
      return absl::InvalidArgumentError(
          absl::StrCat("--ep-results must be f32 or bf16, got \"", args.ep_results, "\""));
    }
    ASSIGN_OR_RETURN(hub_options.pp_transport, rpc::ParsePipelineTransport(args.pp_transport));
    ASSIGN_OR_RETURN(hub, rpc::WorkerHub::Create(hub_options));
    if (args.worker_tls.enabled() && spawn_workers) {
      return absl::InvalidArgumentError(
          "--worker-tls-* is for remote workers (--worker-listen); local workers talk to serve "
          "on loopback with a random join secret");
    }
    ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> worker_credentials,
                     rpc::GrpcServerCredentials(args.worker_tls));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(worker_listen, worker_credentials, &port);
    rpc::WorkerHub::ConfigureServer(builder);
    builder.RegisterService(hub.get());
    worker_server = builder.BuildAndStart();
    if (worker_server == nullptr || port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen for workers on ", worker_listen));
    }
    const std::string host = worker_listen.substr(0, worker_listen.rfind(':'));
    const std::string join_address = absl::StrCat(host, ":", port);
    std::cerr << "bitserve serve: workers join at " << join_address
              << (hub_options.join_secret.empty() ? "" : " (join secret required)")
              << rpc::TlsLabel(args.worker_tls);
    if (args.pipeline_stages > 1) std::cerr << " (" << args.pipeline_stages << " pipeline stages)";
    if (args.expert_parallel > 1) {
      std::cerr << " (expert-parallel groups of " << args.expert_parallel << ")";
    }
    std::cerr << std::endl;
    if (spawn_workers)
      RETURN_IF_ERROR(local_workers.Start(num_workers, join_address, args.serving.device,
                                          hub_options.join_secret));
    while (!hub->WaitForWorker(std::chrono::steady_clock::now() + std::chrono::milliseconds(200))
                .ok()) {
      // A local worker that hangs while the first pipeline forms is killed: serve then fails
      // (Check below) instead of waiting for it forever.
      for (const rpc::WorkerHub::HungWorker& hung : hub->TakeHungWorkers()) {
        local_workers.Kill(hung.worker_id, hung.reason);
      }
      if (absl::Status exited = local_workers.Check(/*ready=*/false); !exited.ok()) {
        server->Shutdown(std::chrono::system_clock::now());
        server->Wait();
        stop_workers();
        local_workers.Stop();
        return exited;
      }
      if (int signal = TakeSignal(signals, std::chrono::milliseconds(0))) {
        std::cerr << "bitserve serve: " << SignalName(signal) << " before a worker joined, exiting"
                  << std::endl;
        server->Shutdown(std::chrono::system_clock::now());
        server->Wait();
        stop_workers();
        local_workers.Stop();
        return absl::OkStatus();
      }
    }
    ASSIGN_OR_RETURN(coordinator, rpc::Coordinator::Create(options, hub->MakeEngine()));
  }
  ASSIGN_OR_RETURN(rpc::ModelSummary info, coordinator->Info());
  std::cerr << "bitserve serve: " << info.model_dir << " on " << info.device << ", KV cache "
            << info.kv_num_blocks << " blocks of " << info.kv_block_size
            << " tokens = " << info.kv_capacity_tokens << " tokens (" << info.kv_dtype
            << "), max_model_len " << info.max_model_len << ", max_num_seqs " << info.max_num_seqs
            << std::endl;
  if (auto config = LoadModelConfig(args.model);
      config.ok() && info.max_model_len > config->context_length()) {
    std::cerr << "bitserve serve: warning: max_model_len " << info.max_model_len
              << " is beyond the " << config->context_length()
              << " positions the model was trained for; RoPE goes on at any position, but quality "
                 "beyond the trained length is not promised"
              << std::endl;
  }
  backend.Set(coordinator.get());
  server->SetReady(coordinator->Ready());
  // The OpenAI-compatible HTTP API beside gRPC, on the same coordinator. The tokenizer gives
  // logprobs their token text (a model without one shows "token_id:N").
  std::unique_ptr<Tokenizer> http_tokenizer;
  std::unique_ptr<rpc::OpenAiHttpServer> http_server;
  if (!args.http_listen.empty()) {
    ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(args.model));
    ASSIGN_OR_RETURN(http_tokenizer, LoadModelTokenizer(args.model, config));
    rpc::OpenAiHttpOptions http;
    http.listen = args.http_listen;
    http.model_name = args.served_model_name.empty() ? args.model : args.served_model_name;
    // A thread per request in flight: every running and waiting sequence, and some to spare.
    http.threads = std::clamp(info.max_num_seqs + info.max_waiting + 16, 64, 4096);
    http.ready = [&coordinator] { return coordinator->Ready(); };
    http.api_keys = &api_keys;
    http.tls_cert = args.tls.cert;
    http.tls_key = args.tls.key;
    http.tls_client_ca = args.tls.client_ca;
    if (http_tokenizer) {
      http.token_bytes = [tok = http_tokenizer.get()](int32_t id) -> std::string {
        return id >= 0 && id < tok->vocab_size() ? tok->TokenBytes(id) : std::string();
      };
    }
    ASSIGN_OR_RETURN(http_server, rpc::OpenAiHttpServer::Start(&backend, std::move(http)));
    const std::string& host = http_server->host();
    std::cerr << "bitserve serve: OpenAI API on " << (args.tls.enabled() ? "https://" : "http://")
              << (host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host) << ":"
              << http_server->port() << "/v1 (model \""
              << (args.served_model_name.empty() ? args.model : args.served_model_name) << "\")"
              << std::endl;
  }
  std::cerr << "bitserve serve: listening on " << server->address() << rpc::TlsLabel(args.tls)
            << std::endl;

  // Readiness follows the coordinator (a lost worker turns it NOT_SERVING, a replacement back).
  int signal = 0;
  while ((signal = TakeSignal(signals, std::chrono::milliseconds(200))) == 0) {
    server->SetReady(coordinator->Ready());
    if (hub) {
      for (const rpc::WorkerHub::HungWorker& hung : hub->TakeHungWorkers()) {
        local_workers.Kill(hung.worker_id, hung.reason);
      }
    }
    if (absl::Status s = local_workers.Check(/*ready=*/true); !s.ok()) {
      std::cerr << "bitserve serve: " << s.message() << std::endl;
    }
  }
  std::cerr << "bitserve serve: " << SignalName(signal) << ", draining (up to "
            << args.drain_timeout_s << " s)" << std::endl;
  server->SetReady(false);
  coordinator->Drain(std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(args.drain_timeout_s * 1000)));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  if (http_server) http_server->Stop();
  coordinator->Shutdown();
  stop_workers();
  local_workers.Stop();
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
  cmd->add_option("--metrics-listen", args->metrics_listen,
                  "Prometheus endpoint host:port (off when empty)");
  cmd->add_option("--health-listen", args->health_listen,
                  "A second gRPC port with only grpc.health.v1, in plaintext, host:port: for "
                  "probes that speak no TLS (Kubernetes) when --tls-cert is set (off when empty)");
  cmd->add_option("--http-listen", args->http_listen,
                  "OpenAI-compatible HTTP API host:port (/v1/completions, /v1/chat/completions, "
                  "/v1/models, /health; off when empty; port 0: any free port)");
  cmd->add_option("--api-key-file", args->api_key_file,
                  "API keys, one per line: every gRPC and HTTP call must send one as "
                  "\"authorization: Bearer KEY\" (health stays open)");
  cmd->add_option("--tls-cert", args->tls.cert,
                  "TLS on the gRPC and HTTP APIs: the server's certificate chain (PEM)");
  cmd->add_option("--tls-key", args->tls.key, "TLS: the certificate's private key (PEM)");
  cmd->add_option("--tls-client-ca", args->tls.client_ca,
                  "Mutual TLS: clients must present a certificate signed by this CA (PEM)");
  cmd->add_flag("--metrics-auth", args->metrics_auth,
                "With --api-key-file: /metrics asks for a key too");
  cmd->add_option("--served-model-name", args->served_model_name,
                  "The model name the HTTP API lists and requests must give (default: --model)");
  AddServingFlags(cmd, &args->serving);
  cmd->add_option("--drain-timeout", args->drain_timeout_s,
                  "Seconds requests in flight get on SIGTERM");
  cmd->add_option(
      "--worker-listen", args->worker_listen,
      "Run no engine here: `bitserve worker --coordinator ADDR` joins at this host:port");
  cmd->add_option("--pipeline-stages", args->pipeline_stages,
                  "Split the layers over this many workers (without --worker-listen: local worker "
                  "processes, one per stage; --device cuda puts stage i on GPU i)");
  cmd->add_option("--pipeline-split", args->pipeline_split,
                  "Layers per pipeline stage, e.g. 45,35 (default: balanced by the bytes a decode "
                  "step reads, which suits batch 1; at large batch a step's time follows the "
                  "layers' compute: bench/pipeline_stage_report.py suggests a split from the "
                  "stages' measured times)");
  cmd->add_option(
      "--expert-parallel", args->expert_parallel,
      "Split each MoE layer's experts over this many workers (per pipeline stage), "
      "attention data-parallel over them (without --worker-listen: local worker "
      "processes; --device cuda puts worker i on GPU i: NCCL between GPUs, TCP otherwise)");
  cmd->add_option("--ep-results", args->ep_results,
                  "Expert-parallel results back to their tokens' ranks: f32 (default: the "
                  "single engine's results exactly) or bf16 (half the bytes)");
  cmd->add_option("--pp-transfer", args->pp_transfer,
                  "Hidden states between stages: int8 (default) or bf16");
  cmd->add_option(
      "--pp-transport", args->pp_transport,
      "Between stages: auto (NCCL when every stage has a GPU of its own, else TCP), nccl or tcp");
  cmd->add_option("--worker-secret-file", args->worker_secret_file,
                  "Workers must send this join secret (first line of the file; default: "
                  "$BITSERVE_WORKER_SECRET, or a random one for local workers) before they are "
                  "assigned anything");
  cmd->add_option("--worker-tls-cert", args->worker_tls.cert,
                  "TLS on the worker link (--worker-listen): this server's certificate (PEM)");
  cmd->add_option("--worker-tls-key", args->worker_tls.key, "The worker link's private key (PEM)");
  cmd->add_option("--worker-tls-client-ca", args->worker_tls.client_ca,
                  "Mutual TLS on the worker link: workers must present a certificate of this CA");
  cmd->add_option("--worker-heartbeat-timeout", args->worker_heartbeat_timeout_ms,
                  "Milliseconds without a heartbeat before a worker is lost (default 3000)");
  cmd->callback([args] { RunOrExit("serve", [&] { return Serve(*args); }); });
}

}  // namespace bitserve::cli
