// At most one log line per interval for events that a client can cause at any rate (malformed
// requests): the first of each interval is logged with the count of those left out before it.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace bitserve::rpc {

class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogThrottle(Clock::duration interval = std::chrono::seconds(1)) : interval_(interval) {}

  // Whether to log this event now; `*suppressed` receives how many were not logged since the
  // last one that was.
  bool Allow(int64_t* suppressed, Clock::time_point now = Clock::now()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (logged_once_ && now - last_ < interval_) {
      ++suppressed_;
      return false;
    }
    logged_once_ = true;
    last_ = now;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  const Clock::duration interval_;
  std::mutex mu_;
  bool logged_once_ = false;
  Clock::time_point last_;
  int64_t suppressed_ = 0;
};

}  // namespace bitserve::rpc
