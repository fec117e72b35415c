// Stop strings matched across chunk boundaries of streamed text.
//
// Text that could still be the start of a stop string is held back until decided, so a client never
// sees part of a stop string. The match is the first stop string to complete, scanning the text as
// one stream (the longest one when several complete at the same byte): the result does not depend
// on how the text was split into chunks. A proper prefix of a stop string that is a suffix of the
// text so far is the only text held, so at most (longest stop string - 1) bytes wait.
#pragma once

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitserve {

class StopStringMatcher {
 public:
  struct Output {
    std::string text;         // final text: not part of any stop string
    bool stopped = false;     // a stop string completed; generation should end
    std::string stop_string;  // which one, when stopped (vLLM's stop_reason)
  };

  // Every generated token is matched against every stop string (on the serving thread), so
  // their number and length are bounded: one request cannot slow every other.
  static constexpr size_t kMaxStopStrings = 64;
  static constexpr size_t kMaxStopStringBytes = 1024;
  // InvalidArgument for an empty stop string (naming its index), or beyond the bounds above.
  // No stop strings is valid.
  static absl::Status Validate(std::span<const std::string> stop_strings);
  static absl::StatusOr<StopStringMatcher> Create(std::vector<std::string> stop_strings,
                                                  bool include_stop_in_output = false);

  // Appends streamed text. When a stop string completes, returns the text before it (followed by
  // the stop string if include_stop_in_output) with stopped = true; later calls return nothing.
  Output Push(absl::string_view text);
  // At the end of the stream (no stop string matched): releases the held text.
  std::string Flush();

  bool stopped() const { return stopped_; }
  absl::string_view held() const { return held_; }

 private:
  StopStringMatcher(std::vector<std::string> stop_strings, bool include_stop_in_output)
      : stop_strings_(std::move(stop_strings)), include_stop_in_output_(include_stop_in_output) {}

  std::vector<std::string> stop_strings_;
  bool include_stop_in_output_;
  bool stopped_ = false;
  std::string held_;
};

}  // namespace bitserve
