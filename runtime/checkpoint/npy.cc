#include "runtime/checkpoint/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file_io.h"
#include "base/status_macros.h"

namespace bitserve {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr int64_t kMaxElements = int64_t{1} << 36;

}  // namespace

absl::Status WriteNpyFloat32(const std::filesystem::path& path, const std::vector<int64_t>& shape,
                             const float* data) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  // Python tuple syntax: "(2, 3)", "(5,)", "()".
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": cannot open for writing"));
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(kMagic, 6);
  out.put(1);
  out.put(0);
  out.put(static_cast<char>(len & 0xff));
  out.put(static_cast<char>(len >> 8));
  out.write(header.data(), header.size());
  out.write(reinterpret_cast<const char*>(data), count * sizeof(float));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<NpyArray> ReadNpyFloat32(const std::filesystem::path& path) {
  const std::string name = path.string();
  ASSIGN_OR_RETURN(const std::string bytes, ReadFileToString(path));
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a float32 .npy file: ", what));
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0) return bad("bad magic");
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    header_start = 12;
  } else {
    return bad(absl::StrCat("unsupported version ", major));
  }
  if (bytes.size() < header_start + header_len) return bad("truncated header");
  const std::string header = bytes.substr(header_start, header_len);
  std::smatch match;
  if (!std::regex_search(header, match, std::regex("'descr':\\s*'([^']*)'")) || match[1] != "<f4") {
    return bad("descr must be '<f4'");
  }
  if (!std::regex_search(header, std::regex("'fortran_order':\\s*False"))) {
    return bad("fortran_order must be False");
  }
  if (!std::regex_search(header, match, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    return bad("no shape");
  NpyArray array;
  int64_t count = 1;
  for (absl::string_view part : absl::StrSplit(match[1].str(), ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) return bad("bad shape");
    array.shape.push_back(d);
    count *= d;
    if (count > kMaxElements) return bad("shape too large");
  }
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start != static_cast<size_t>(count) * sizeof(float)) {
    return bad(absl::StrCat("data has ", bytes.size() - data_start, " bytes, shape needs ",
                            count * sizeof(float)));
  }
  array.data.resize(count);
  std::memcpy(array.data.data(), bytes.data() + data_start, count * sizeof(float));
  return array;
}

}  // namespace bitserve
