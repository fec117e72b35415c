#include "runtime/text/stop_strings.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {

absl::Status StopStringMatcher::Validate(std::span<const std::string> stop_strings) {
  if (stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop holds ", stop_strings.size(), " strings; at most ", kMaxStopStrings));
  }
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is empty"));
    }
    if (stop_strings[i].size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] has ", stop_strings[i].size(),
                                                     " bytes; at most ", kMaxStopStringBytes));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StopStringMatcher> StopStringMatcher::Create(std::vector<std::string> stop_strings,
                                                            bool include_stop_in_output) {
  RETURN_IF_ERROR(Validate(stop_strings));
  return StopStringMatcher(std::move(stop_strings), include_stop_in_output);
}

StopStringMatcher::Output StopStringMatcher::Push(absl::string_view text) {
  Output out;
  if (stopped_) {
    out.stopped = true;
    return out;
  }
  held_.append(text.data(), text.size());
  const absl::string_view s = held_;

  // The earliest-ending occurrence; for one stop string its first occurrence ends earliest. No
  // occurrence lies inside the previously held text, or it would have matched then.
  size_t best_end = absl::string_view::npos;
  const std::string* best = nullptr;
  for (const std::string& stop : stop_strings_) {
    const size_t pos = s.find(stop);
    if (pos == absl::string_view::npos) continue;
    const size_t end = pos + stop.size();
    if (end < best_end || (end == best_end && stop.size() > best->size())) {
      best_end = end;
      best = &stop;
    }
  }
  if (best != nullptr) {
    const size_t start = best_end - best->size();
    out.text.assign(s.data(), include_stop_in_output_ ? best_end : start);
    out.stopped = true;
    out.stop_string = *best;
    stopped_ = true;
    held_.clear();
    return out;
  }

  // Hold the longest suffix that is a proper prefix of some stop string; release the rest.
  size_t hold = 0;
  for (const std::string& stop : stop_strings_) {
    for (size_t len = std::min(stop.size() - 1, s.size()); len > hold; --len) {
      if (absl::EndsWith(s, absl::string_view(stop).substr(0, len))) {
        hold = len;
        break;
      }
    }
  }
  out.text.assign(s.data(), s.size() - hold);
  held_.erase(0, s.size() - hold);
  return out;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return {};
  return std::exchange(held_, {});
}

}  // namespace bitserve
