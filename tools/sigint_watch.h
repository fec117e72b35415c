// Waiting for work done on other threads while Ctrl-C stays an orderly request rather than a
// kill: SIGINT is blocked in every thread and read from a signalfd, so the waiting thread learns
// of it and can cancel (a `client generate` tells the server, which frees the sequence) before the
// process exits. Linux only (signalfd, eventfd).
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"

namespace bitserve::cli {

class SigintWatch {
 public:
  enum class Event { kNotified, kSigint, kTimeout };

  // Blocks SIGINT in the calling thread. Call it before any other thread starts (threads inherit
  // the mask), or a SIGINT may be delivered to a thread that has it unblocked and kill the process.
  // SIGINT stays blocked for the rest of the process: unblocking it with a Ctrl-C pending would
  // kill the process in the middle of its clean exit.
  static absl::StatusOr<std::unique_ptr<SigintWatch>> Create();
  ~SigintWatch();
  SigintWatch(const SigintWatch&) = delete;
  SigintWatch& operator=(const SigintWatch&) = delete;

  // Wakes Wait (now or at its next call). Any thread; async-signal-safe.
  void Notify();
  // Until Notify, SIGINT or `timeout` (negative: no limit). A SIGINT is consumed: the next Wait
  // waits for another one. A Notify is consumed likewise.
  Event Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));

 private:
  SigintWatch(int signal_fd, int event_fd) : signal_fd_(signal_fd), event_fd_(event_fd) {}
  const int signal_fd_;
  const int event_fd_;
};

}  // namespace bitserve::cli
