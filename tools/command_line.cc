#include "tools/command_line.h"

#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bitserve::cli {

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int32_t id;
    if (part.empty() || !absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": \"", part, "\" is not a token id (expected comma-separated non-negative integers)"));
    }
    ids.push_back(id);
  }
  return ids;
}

void RunOrExit(absl::string_view command, const std::function<absl::Status()>& body) {
  absl::Status status = body();
  if (!status.ok()) {
    std::cerr << "bitserve " << command << ": " << status.message() << std::endl;
    std::exit(1);
  }
}

}  // namespace bitserve::cli
