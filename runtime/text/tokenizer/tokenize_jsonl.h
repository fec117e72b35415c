// JSONL tokenization, the body of `bitserve tokenize --jsonl`: one {"text": ...} object per input
// line, one {"ids": [...]} per output line, in order. A malformed line does not stop the stream:
// it gets {"error": "...", "line": N} in the output (so output line k still answers input line
// k) and a message on `err`, and is counted.
#pragma once

#include <cstdint>
#include <iosfwd>

#include "runtime/text/tokenizer/tokenizer.h"

namespace bitserve {

struct JsonlTokenizeStats {
  int64_t lines = 0;   // input lines read
  int64_t failed = 0;  // of which malformed
};

JsonlTokenizeStats TokenizeJsonl(const Tokenizer& tokenizer, const EncodeOptions& options,
                                 std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace bitserve
