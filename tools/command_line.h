// Pieces shared by the `bitserve` subcommands.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/kv_cache_format.h"
#include "rpc/tls.h"
#include "runtime/engine/engine.h"

namespace bitserve::cli {

// "1,2, 3" -> {1, 2, 3}. Names `flag` in the error.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag);

// --kv-dtype, shared by the subcommands that load an engine: the option (stored as text) and its
// parse: "" leaves the engine's default (f32 on cpu, bf16 on cuda), anything else must be one of
// f32, bf16, int8, int4 (the engine then says whether its device supports it).
void AddKvDtypeOption(CLI::App* cmd, std::string* value);
absl::StatusOr<std::optional<KvDtype>> ParseKvDtypeFlag(const std::string& value);

// --kv-rotation none|hadamard beside --kv-dtype: "" leaves the default (hadamard for int8 / int4
// caches, none for f32 / bf16: EngineOptions::kv_rotation); anything else is InvalidArgument
// naming the flag and the accepted values.
void AddKvRotationOption(CLI::App* cmd, std::string* value);
absl::StatusOr<std::optional<KvRotation>> ParseKvRotationFlag(const std::string& value);

// --load-format safetensors|dummy (runtime/engine/engine.h LoadFormat), for the subcommands that
// load an engine; the parse names the flag.
void AddLoadFormatOption(CLI::App* cmd, std::string* value);
absl::StatusOr<LoadFormat> ParseLoadFormatFlag(const std::string& value);

// --lm-head-dtype bf16|int8 (runtime/engine/engine.h LmHeadDtype), for the subcommands that load
// an engine; "" is bf16; the parse names the flag.
void AddLmHeadDtypeOption(CLI::App* cmd, std::string* value);
absl::StatusOr<LmHeadDtype> ParseLmHeadDtypeFlag(const std::string& value);

// --api-key KEY for the subcommands that talk to a `bitserve serve` (client, batch --server,
// bench-serve --server); ApiKey() is the flag's value, or else $BITSERVE_API_KEY, or else empty.
void AddApiKeyOption(CLI::App* cmd, std::string* value);
std::string ApiKey(const std::string& flag_value);
// --tls-ca, --tls-cert, --tls-key for the same subcommands: TLS to a `serve --tls-cert`
// (rpc/tls.h), with a client certificate for mutual TLS.
void AddClientTlsOptions(CLI::App* cmd, rpc::ClientTlsFiles* files);

// The worker join secret: the first line of `path` (surrounding whitespace trimmed), or else
// $BITSERVE_WORKER_SECRET when `path` is empty, or else empty (no secret). InvalidArgument naming
// `flag` when the file cannot be read or the secret is shorter than 16 characters.
absl::StatusOr<std::string> WorkerSecret(const std::string& path, const std::string& flag);

// Runs a subcommand body; a non-OK status prints "bitserve NAME: message" and exits with 1.
void RunOrExit(absl::string_view command, const std::function<absl::Status()>& body);

// The subcommands.
void AddMakeModelCommand(CLI::App& app);
void AddLogitsCommand(CLI::App& app);
void AddGenerateCommand(CLI::App& app);
void AddTokenizeCommand(CLI::App& app);
void AddPerplexityCommand(CLI::App& app);
void AddBatchCommand(CLI::App& app);
void AddServeCommand(CLI::App& app);
void AddWorkerCommand(CLI::App& app);
void AddClientCommand(CLI::App& app);
void AddBenchServeCommand(CLI::App& app);

}  // namespace bitserve::cli
