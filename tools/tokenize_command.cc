// bitserve tokenize --tokenizer FILE_OR_DIR [--jsonl] [--parse-special] [--add-bos] [--text TEXT]
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/text/tokenizer/tokenize_jsonl.h"
#include "runtime/text/tokenizer/tokenizer.h"
#include "tools/command_line.h"

namespace bitserve::cli {

void AddTokenizeCommand(CLI::App& app) {
  struct Args {
    std::string tokenizer, text;
    bool jsonl = false, parse_special = false, add_bos = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of text");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json, or a directory holding it (and tokenizer_config.json)")
      ->required();
  CLI::Option* jsonl =
      cmd->add_flag("--jsonl", args->jsonl,
                    "Read {\"text\": ...} lines from stdin, write {\"ids\": [...]} lines");
  cmd->add_flag("--parse-special", args->parse_special,
                "Turn special-token text such as <|eot_id|> into the special token (default: "
                "it is ordinary text)");
  cmd->add_flag("--add-bos", args->add_bos, "Prepend the BOS token");
  cmd->add_option("--text", args->text, "The text to tokenize (default: all of stdin)")
      ->excludes(jsonl);
  cmd->footer(
      "Without --jsonl, prints the ids of the text space-separated on one line.\n"
      "With --jsonl, output line N answers input line N. A malformed input line (not JSON, or no "
      "\"text\" string) gets {\"error\": \"...\", \"line\": N} on stdout and a message naming the "
      "line on stderr; the remaining lines are still tokenized, and the command then exits with "
      "status 1.");
  cmd->callback([args, cmd] {
    RunOrExit("tokenize", [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Load(args->tokenizer));
      if (args->add_bos && !tokenizer->bos_id().has_value()) {
        return absl::FailedPreconditionError(
            absl::StrCat("--add-bos: ", args->tokenizer,
                         " names no BOS token (bos_token in tokenizer_config.json, or a "
                         "post-processor template)"));
      }
      EncodeOptions options;
      options.parse_special = args->parse_special;
      options.add_bos = args->add_bos;
      if (args->jsonl) {
        const JsonlTokenizeStats stats =
            TokenizeJsonl(*tokenizer, options, std::cin, std::cout, std::cerr);
        if (stats.failed > 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              stats.failed, " of ", stats.lines, " input lines were malformed (see above)"));
        }
        return absl::OkStatus();
      }
      std::string text = args->text;
      if (cmd->count("--text") == 0) {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      }
      std::string line;
      for (int32_t id : tokenizer->Encode(text, options)) {
        if (!line.empty()) line += ' ';
        absl::StrAppend(&line, id);
      }
      std::cout << line << std::endl;
      return absl::OkStatus();
    });
  });
}

}  // namespace bitserve::cli
