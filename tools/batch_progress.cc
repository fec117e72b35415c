#include "tools/batch_progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bitserve::cli {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

BatchProgress::BatchProgress(std::ostream& out, bool terminal, Clock::time_point start)
    : out_(out), terminal_(terminal), start_(start) {}

std::string BatchProgress::BarText(const BatchCounts& c, double elapsed) {
  constexpr int kWidth = 20;
  const int64_t done = c.skipped + c.completed + c.failed + c.malformed + c.duplicates;
  const double fraction = c.total > 0 ? std::min(1.0, double(done) / c.total) : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar = "[";
  bar.append(filled, '#').append(kWidth - filled, '.').append("]");
  // Rates over this run only: lines skipped from an earlier run took no time now.
  const int64_t ran = c.completed + c.failed + c.malformed;
  const double tokens_per_s = elapsed > 0 ? c.generated_tokens / elapsed : 0;
  std::string eta = "?";
  if (ran > 0 && elapsed > 0) eta = FormatDuration((c.total - done) / (ran / elapsed));
  std::string text = absl::StrFormat("%s %d/%d %.1f%% | %.1f tok/s | ETA %s", bar, done, c.total,
                                     100 * fraction, tokens_per_s, eta);
  if (c.prefill_total > 0) {
    absl::StrAppend(
        &text, absl::StrFormat(" | prefill %d/%d tokens (%.1f%%)", c.prefill_done, c.prefill_total,
                               100.0 * c.prefill_done / c.prefill_total));
  }
  const int64_t errors = c.failed + c.malformed + c.duplicates;
  if (errors > 0) absl::StrAppend(&text, " | ", errors, errors == 1 ? " error" : " errors");
  return text;
}

void BatchProgress::Clear() {
  if (drawn_) out_ << "\r\033[K";
  drawn_ = false;
}

void BatchProgress::Update(const BatchCounts& counts, Clock::time_point now, bool force) {
  if (!terminal_) return;
  if (!force && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  out_ << "\r\033[K" << BarText(counts, std::chrono::duration<double>(now - start_).count())
       << std::flush;
  drawn_ = true;
}

void BatchProgress::Message(const std::string& text) {
  Clear();
  out_ << text << "\n" << std::flush;
}

void BatchProgress::Finish(const std::string& text) {
  Clear();
  out_ << text << std::endl;
}

}  // namespace bitserve::cli
