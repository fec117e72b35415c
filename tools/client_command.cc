// bitserve client generate --server ADDR (--prompt T | --chat T | --prompt-ids 1,2) [generate's
//                          flags] [--request-id ID] [--timeout SECONDS] [--connect-timeout SECONDS]
// bitserve client info     --server ADDR        # ModelInfo as one JSON object
// bitserve client tokenize --server ADDR [--text T] [--add-special-tokens]
//
// A running `bitserve serve` through the C++ client (rpc/client.h). `client generate` takes the
// flags of `bitserve generate` (tools/generation_flags.h) and prints what it prints, so the two are
// interchangeable in scripts. An error prints "bitserve client: CODE: message" (the gRPC code
// name, so that a script can tell a bad request from an unreachable or busy server) and exits 1;
// Ctrl-C cancels the request on the server and exits 130.
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "rpc/client.h"
#include "tools/command_line.h"
#include "tools/generation_flags.h"
#include "tools/sigint_watch.h"

namespace bitserve::cli {
namespace {

// 128 + SIGINT, what a shell reports for a command ended by Ctrl-C.
constexpr int kInterruptedExitCode = 130;
// After Ctrl-C, how long the cancellation may take to come back before the client gives up.
constexpr std::chrono::seconds kCancelWait{5};

struct ServerFlags {
  std::string address;
  double connect_timeout_s = 10;
  std::string api_key;
  rpc::ClientTlsFiles tls;
};

void AddServerFlags(CLI::App* cmd, ServerFlags* flags) {
  cmd->add_option("--server", flags->address, "host:port of a `bitserve serve`")->required();
  cmd->add_option("--connect-timeout", flags->connect_timeout_s,
                  "Seconds to wait for the connection (default 10)");
  AddApiKeyOption(cmd, &flags->api_key);
  AddClientTlsOptions(cmd, &flags->tls);
}

absl::StatusOr<std::chrono::milliseconds> Milliseconds(double seconds, absl::string_view flag) {
  // Also false for NaN. The upper bound keeps the conversion to int64 milliseconds defined.
  if (!(seconds >= 0 && seconds <= 1e9)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be in [0, 1e9] seconds, got ", seconds));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

absl::StatusOr<std::unique_ptr<rpc::RemoteBackend>> Connect(const ServerFlags& flags,
                                                            double request_timeout_s) {
  rpc::RemoteBackendOptions options;
  ASSIGN_OR_RETURN(options.connect_timeout,
                   Milliseconds(flags.connect_timeout_s, "--connect-timeout"));
  if (options.connect_timeout.count() == 0) {
    return absl::InvalidArgumentError("--connect-timeout must be at least 0.001 seconds");
  }
  ASSIGN_OR_RETURN(options.request_timeout, Milliseconds(request_timeout_s, "--timeout"));
  if (request_timeout_s > 0 && options.request_timeout.count() == 0) {
    options.request_timeout = std::chrono::milliseconds(1);  // 0 would mean "no deadline"
  }
  options.api_key = ApiKey(flags.api_key);
  ASSIGN_OR_RETURN(options.credentials, rpc::GrpcChannelCredentials(flags.tls));
  return rpc::RemoteBackend::Connect(flags.address, options);
}

// An error prints "bitserve client: CODE: message" and exits 1; otherwise the process exits with
// the body's exit code when it is not 0 (after the body has cleaned up: the connection is closed).
void RunClientOrExit(const std::function<absl::StatusOr<int>()>& body) {
  int exit_code = 0;
  RunOrExit("client", [&]() -> absl::Status {
    absl::StatusOr<int> result = body();
    if (!result.ok()) {
      const absl::StatusCode code = result.status().code();
      return absl::Status(
          code, absl::StrCat(absl::StatusCodeToString(code), ": ", result.status().message()));
    }
    exit_code = *result;
    return absl::OkStatus();
  });
  if (exit_code != 0) {
    std::cout.flush();
    std::exit(exit_code);
  }
}

// ---- client generate ----

struct GenerateArgs {
  ServerFlags server;
  GenerationFlags gen;
  std::string request_id;
  double timeout_s = 0;
};

absl::StatusOr<rpc::GenerationInput> Input(const GenerationFlags& gen) {
  if (!gen.prompt_ids.empty()) {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseTokenIds(gen.prompt_ids, "--prompt-ids"));
    return rpc::TokenInput{std::move(ids)};
  }
  if (!gen.chat.empty()) return rpc::ChatInput{{ChatMessage{"user", gen.chat}}};
  return rpc::TextInput{gen.prompt};
}

// Runs `step` (connecting, a unary call: nothing on the server to cancel yet) on another thread,
// so that Ctrl-C ends the command at once rather than when the step's own timeout passes. SIGINT
// stays blocked in that thread too: it inherits the mask.
template <typename T>
T UnlessInterrupted(SigintWatch& watch, const std::function<T()>& step) {
  std::optional<T> result;
  std::thread thread([&] {
    result.emplace(step());
    watch.Notify();
  });
  if (watch.Wait() == SigintWatch::Event::kSigint) {
    std::cerr << "bitserve client: interrupted" << std::endl;
    // _Exit: the step's thread is still inside gRPC, which exit()'s destructors would pull away.
    std::_Exit(kInterruptedExitCode);
  }
  thread.join();
  return *std::move(result);
}

// Whether the stream prints text (the server's model has a tokenizer) or token ids (it has not),
// as `bitserve generate` does. A text or chat prompt needs a tokenizer anyway (the server refuses
// it otherwise); for token ids the server is asked: Tokenize fails FAILED_PRECONDITION without one.
absl::StatusOr<bool> StreamsText(rpc::RemoteBackend& backend, const rpc::GenerationInput& input) {
  if (!std::holds_alternative<rpc::TokenInput>(input)) return true;
  absl::StatusOr<std::vector<int32_t>> probe = backend.Tokenize("", /*add_special=*/false);
  if (probe.ok()) return true;
  if (probe.status().code() == absl::StatusCode::kFailedPrecondition) return false;
  return probe.status();
}

// What has come back of the request. The chunk callback writes it on a gRPC thread; the main
// thread reads it under the same mutex.
struct Received {
  std::mutex mu;
  GenerationOutput output;
  bool final = false;
  absl::Status status;  // of a final "error" chunk
  bool streamed_any = false;
};

absl::StatusOr<int> RunGenerate(const GenerateArgs& args) {
  const GenerationFlags& gen = args.gen;
  RETURN_IF_ERROR(gen.Check());
  ASSIGN_OR_RETURN(rpc::GenerationInput input, Input(gen));
  rpc::GenerationParams params;
  params.sampling = gen.Sampling();
  params.logprobs = params.sampling.top_logprobs > 0;
  params.max_new_tokens = gen.max_tokens;
  params.stop_strings = gen.stop;
  params.ignore_eos = gen.ignore_eos;
  params.request_id = args.request_id;

  // In this order: SIGINT is blocked before gRPC starts its threads, and `received` outlives the
  // backend, whose destructor may still deliver a final chunk into it.
  ASSIGN_OR_RETURN(std::unique_ptr<SigintWatch> watch, SigintWatch::Create());
  Received received;
  using Backend = absl::StatusOr<std::unique_ptr<rpc::RemoteBackend>>;
  ASSIGN_OR_RETURN(
      std::unique_ptr<rpc::RemoteBackend> backend,
      UnlessInterrupted<Backend>(*watch, [&] { return Connect(args.server, args.timeout_s); }));
  bool stream_text = true;
  if (!gen.json) {
    ASSIGN_OR_RETURN(stream_text, UnlessInterrupted<absl::StatusOr<bool>>(
                                      *watch, [&] { return StreamsText(*backend, input); }));
  }

  auto on_chunk = [&](rpc::GenerationChunk chunk) {
    std::lock_guard<std::mutex> lock(received.mu);
    GenerationOutput& out = received.output;
    out.token_ids.insert(out.token_ids.end(), chunk.token_ids.begin(), chunk.token_ids.end());
    out.text += chunk.text;
    out.logprobs.insert(out.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
    if (!gen.json) {
      if (stream_text) {
        std::cout << chunk.text;
      } else {
        for (int32_t id : chunk.token_ids) std::cout << id << " ";
      }
      std::cout << std::flush;
      received.streamed_any = received.streamed_any || !chunk.token_ids.empty();
    }
    if (chunk.final) {
      out.finish_reason = chunk.finish_reason;
      out.prompt_tokens = chunk.usage.prompt_tokens;
      out.seed = chunk.seed;
      received.status = chunk.status;
      received.final = true;
      watch->Notify();
    }
  };
  absl::StatusOr<uint64_t> id = backend->Submit(std::move(input), params, on_chunk);
  // Submit checks the parameters as the server does: "sampling.top_p must be in (0, 1], got 2".
  if (!id.ok()) return id.status();

  auto finished = [&] {
    std::lock_guard<std::mutex> lock(received.mu);
    return received.final;
  };
  bool interrupted = false;
  while (!finished()) {
    const SigintWatch::Event event =
        watch->Wait(interrupted ? kCancelWait : std::chrono::milliseconds(-1));
    if (event == SigintWatch::Event::kSigint && !interrupted) {
      interrupted = true;  // the server sees the call cancelled and frees the sequence
      backend->Cancel(*id, absl::CancelledError("interrupted (Ctrl-C)"));
    } else if (event != SigintWatch::Event::kNotified) {
      break;  // a second Ctrl-C, or the cancellation is taking too long: leave anyway
    }
  }
  if (interrupted) {
    backend.reset();  // cancels what is left and waits for it
    if (!gen.json && received.streamed_any) std::cout << std::endl;
    std::cerr << "bitserve client: interrupted, request cancelled" << std::endl;
    return kInterruptedExitCode;
  }

  std::lock_guard<std::mutex> lock(received.mu);
  const GenerationOutput& out = received.output;
  if (out.finish_reason == "error") {
    if (received.streamed_any) std::cout << std::endl;
    absl::Status status = received.status;
    if (status.code() == absl::StatusCode::kDeadlineExceeded) {
      status = absl::DeadlineExceededError(
          absl::StrCat(status.message(), " (--timeout ", args.timeout_s, " s)"));
    }
    return status;
  }
  if (gen.json) {
    std::cout << GenerationJson(out, params.sampling).dump() << std::endl;
  } else {
    std::cout << "\n[" << out.finish_reason << "]" << std::endl;
  }
  if (out.finish_reason == "cancelled") {
    // Not by us: the server cancels what is still running when its drain time is up.
    return absl::CancelledError("the server cancelled the request (it is shutting down)");
  }
  return 0;
}

void AddClientGenerateCommand(CLI::App* client) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = client->add_subcommand(
      "generate", "Generate for one prompt on a server (streams it); the flags of `generate`");
  AddServerFlags(cmd, &args->server);
  AddGenerationFlags(cmd, &args->gen);
  cmd->add_option("--request-id", args->request_id, "Echoed in the server's logs");
  cmd->add_option("--timeout", args->timeout_s,
                  "Deadline of the request in seconds (0: none); DEADLINE_EXCEEDED when it passes");
  cmd->callback([args] { RunClientOrExit([&] { return RunGenerate(*args); }); });
}

// ---- client info, client tokenize ----

nlohmann::json ModelSummaryJson(const rpc::ModelSummary& m) {
  // The names of bitserve.v1's ModelInfoResponse fields.
  return {{"model_dir", m.model_dir},
          {"architecture", m.architecture},
          {"vocab_size", m.vocab_size},
          {"hidden_size", m.hidden_size},
          {"num_layers", m.num_layers},
          {"num_attention_heads", m.num_attention_heads},
          {"num_key_value_heads", m.num_key_value_heads},
          {"max_model_len", m.max_model_len},
          {"max_num_seqs", m.max_num_seqs},
          {"max_waiting", m.max_waiting},
          {"max_num_batched_tokens", m.max_num_batched_tokens},
          {"kv_block_size", m.kv_block_size},
          {"kv_num_blocks", m.kv_num_blocks},
          {"kv_capacity_tokens", m.kv_capacity_tokens},
          {"kv_dtype", m.kv_dtype},
          {"device", m.device},
          {"eos_token_ids", m.eos_token_ids}};
}

void AddClientInfoCommand(CLI::App* client) {
  auto flags = std::make_shared<ServerFlags>();
  CLI::App* cmd = client->add_subcommand("info", "Print the server's model and limits as JSON");
  AddServerFlags(cmd, flags.get());
  cmd->callback([flags] {
    RunClientOrExit([&]() -> absl::StatusOr<int> {
      ASSIGN_OR_RETURN(std::unique_ptr<rpc::RemoteBackend> backend, Connect(*flags, 0));
      ASSIGN_OR_RETURN(rpc::ModelSummary summary, backend->Info());
      std::cout << ModelSummaryJson(summary).dump() << std::endl;
      return 0;
    });
  });
}

void AddClientTokenizeCommand(CLI::App* client) {
  struct Args {
    ServerFlags server;
    std::string text;
    bool add_special = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = client->add_subcommand(
      "tokenize", "Print the token ids the server's model sees for a text, space-separated");
  AddServerFlags(cmd, &args->server);
  cmd->add_option("--text", args->text, "The text to tokenize (default: all of stdin)");
  cmd->add_flag("--add-special-tokens", args->add_special,
                "Prepend BOS where the tokenizer's config adds it, as a text prompt does");
  cmd->callback([args, cmd] {
    RunClientOrExit([&]() -> absl::StatusOr<int> {
      std::string text = args->text;
      if (cmd->count("--text") == 0) {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      }
      ASSIGN_OR_RETURN(std::unique_ptr<rpc::RemoteBackend> backend, Connect(args->server, 0));
      ASSIGN_OR_RETURN(std::vector<int32_t> ids, backend->Tokenize(text, args->add_special));
      std::cout << absl::StrJoin(ids, " ") << std::endl;
      return 0;
    });
  });
}

}  // namespace

void AddClientCommand(CLI::App& app) {
  CLI::App* client =
      app.add_subcommand("client", "Talk to a running `bitserve serve` (bitserve.v1)");
  client->require_subcommand(1);
  AddClientGenerateCommand(client);
  AddClientInfoCommand(client);
  AddClientTokenizeCommand(client);
}

}  // namespace bitserve::cli
