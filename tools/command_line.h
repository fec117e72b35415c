// Pieces shared by the `bitserve` subcommands.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"

namespace bitserve::cli {

// "1,2, 3" -> {1, 2, 3}. Names `flag` in the error.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag);

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
