// Progress of `bitserve batch` on stderr. On a terminal: one line redrawn in place,
//   [#########...........] 1234/5000 24.7% | 312.5 tok/s | ETA 3m12s | 3 errors
// and, while long prompts are prefilled chunk by chunk, "| prefill 98304/524288 tokens (18.8%)".
// Elsewhere (a log file, CI): nothing until the final summary line. Messages about single lines
// (malformed input) are printed either way, above the bar.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace bitserve::cli {

struct BatchCounts {
  int64_t total = 0;        // non-blank input lines
  int64_t skipped = 0;      // already in the output from an earlier run
  int64_t completed = 0;    // results written in this run (finished records)
  int64_t failed = 0;       // requests that failed in this run (error records written)
  int64_t retry_later = 0;  // of those, retryable failures: ids without a result yet
  int64_t malformed = 0;    // lines that are not valid requests (reported, error record by id)
  int64_t duplicates = 0;   // lines whose id came earlier in the input (reported, not run)
  int64_t generated_tokens = 0;
  int64_t prompt_tokens = 0;
  // Long prompts being prefilled in chunks right now: tokens done of their total.
  int64_t prefill_done = 0;
  int64_t prefill_total = 0;
};

class BatchProgress {
 public:
  using Clock = std::chrono::steady_clock;
  BatchProgress(std::ostream& out, bool terminal, Clock::time_point start = Clock::now());

  // Redraws the bar (at most every 100 ms unless `force`). No output when not a terminal.
  void Update(const BatchCounts& counts, Clock::time_point now = Clock::now(), bool force = false);
  // A message on its own line; the bar is redrawn after it at the next Update.
  void Message(const std::string& text);
  // Clears the bar and prints `text` as the last line.
  void Finish(const std::string& text);

  // The bar's text without terminal control characters (for tests).
  static std::string BarText(const BatchCounts& counts, double elapsed_seconds);

 private:
  void Clear();
  std::ostream& out_;
  const bool terminal_;
  const Clock::time_point start_;
  Clock::time_point last_draw_{};
  bool drawn_ = false;
};

// "42s", "3m12s", "2h05m".
std::string FormatDuration(double seconds);

}  // namespace bitserve::cli
