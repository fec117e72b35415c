#include "runtime/text/tokenizer/tokenize_jsonl.h"

#include <istream>
#include <ostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace bitserve {
namespace {

// The reason `line` is not a {"text": string} object, or "" when it is one (then *text is set).
std::string ParseLine(const std::string& line, std::string* text) {
  nlohmann::json value = nlohmann::json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return "not valid JSON";
  if (!value.is_object()) return absl::StrCat("expected a JSON object, got ", value.type_name());
  auto it = value.find("text");
  if (it == value.end()) return "no \"text\" field";
  if (!it->is_string()) return absl::StrCat("\"text\" is a ", it->type_name(), ", not a string");
  *text = it->get<std::string>();
  return "";
}

}  // namespace

JsonlTokenizeStats TokenizeJsonl(const Tokenizer& tokenizer, const EncodeOptions& options,
                                 std::istream& in, std::ostream& out, std::ostream& err) {
  JsonlTokenizeStats stats;
  std::string line, text, buffer;
  while (std::getline(in, line)) {
    ++stats.lines;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
    const std::string problem = ParseLine(line, &text);
    buffer.clear();
    if (!problem.empty()) {
      ++stats.failed;
      err << "line " << stats.lines << ": " << problem << "\n";
      nlohmann::json reply = {{"error", problem}, {"line", stats.lines}};
      buffer = reply.dump();
    } else {
      buffer = "{\"ids\": [";
      bool first = true;
      for (int32_t id : tokenizer.Encode(text, options)) {
        if (!first) buffer += ", ";
        absl::StrAppend(&buffer, id);
        first = false;
      }
      buffer += "]}";
    }
    buffer += '\n';
    out << buffer;
    // Flush only when the next line is not already buffered: a client that writes one line and
    // waits gets its answer, a large file is not written one syscall per line.
    if (in.rdbuf()->in_avail() <= 0) out.flush();
  }
  out.flush();
  return stats;
}

}  // namespace bitserve
