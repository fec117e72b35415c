#include "rpc/api_keys.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace bitserve::rpc {
namespace {

// Equal contents, in time that depends only on the lengths.
bool SameKey(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return absl::InvalidArgumentError(absl::StrCat("--api-key-file ", path, ": cannot read it"));
  std::vector<std::string> keys;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const absl::string_view key = absl::StripAsciiWhitespace(line);
    if (key.empty() || key.front() == '#') continue;
    bool space = false;
    for (char c : key) space = space || absl::ascii_isspace(static_cast<unsigned char>(c));
    if (key.size() < 16 || space) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api-key-file ", path, ": the key on line ", number,
                       " is shorter than 16 characters or has whitespace inside"));
    }
    keys.emplace_back(key);
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--api-key-file ", path, ": no keys in it"));
  }
  return ApiKeys(std::move(keys));
}

bool ApiKeys::Allows(absl::string_view authorization) const {
  if (keys_.empty()) return true;
  authorization = absl::StripAsciiWhitespace(authorization);
  if (authorization.size() < 7 || !absl::EqualsIgnoreCase(authorization.substr(0, 7), "bearer ")) {
    return false;
  }
  const absl::string_view key = absl::StripAsciiWhitespace(authorization.substr(7));
  bool allowed = false;
  for (const std::string& k : keys_) allowed |= SameKey(key, k);  // every key, no early exit
  return allowed;
}

}  // namespace bitserve::rpc
