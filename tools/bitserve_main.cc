// bitserve: serving runtime for ternary-weight LLMs. See DESIGN.md for the command-line contract.
#include "CLI/CLI.hpp"
#include "tools/command_line.h"

int main(int argc, char** argv) {
  CLI::App app{"bitserve: serving runtime for ternary-weight (BitNet b1.58) LLMs"};
  app.require_subcommand(1);
  bitserve::cli::AddMakeModelCommand(app);
  bitserve::cli::AddLogitsCommand(app);
  bitserve::cli::AddGenerateCommand(app);
  bitserve::cli::AddTokenizeCommand(app);
  bitserve::cli::AddPerplexityCommand(app);
  bitserve::cli::AddBatchCommand(app);
  bitserve::cli::AddServeCommand(app);
  bitserve::cli::AddWorkerCommand(app);
  bitserve::cli::AddClientCommand(app);
  bitserve::cli::AddBenchServeCommand(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
