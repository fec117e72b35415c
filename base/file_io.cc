#include "base/file_io.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace bitserve {

absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read failed"));
  return std::move(contents).str();
}

}  // namespace bitserve
