#include "tools/sigint_watch.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace bitserve::cli {

absl::StatusOr<std::unique_ptr<SigintWatch>> SigintWatch::Create() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  // Linux queues a blocked signal even when its disposition is "ignore" (as bash sets it for
  // background jobs), so the signalfd sees a `kill -INT` in that case too.
  if (int err = pthread_sigmask(SIG_BLOCK, &signals, nullptr); err != 0) {
    return absl::InternalError(absl::StrCat("pthread_sigmask: ", std::strerror(err)));
  }
  const int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd < 0) return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
  const int event_fd = eventfd(0, EFD_CLOEXEC);
  if (event_fd < 0) {
    const int err = errno;
    close(signal_fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(err)));
  }
  return std::unique_ptr<SigintWatch>(new SigintWatch(signal_fd, event_fd));
}

SigintWatch::~SigintWatch() {
  close(signal_fd_);
  close(event_fd_);
}

void SigintWatch::Notify() {
  const uint64_t one = 1;
  // Cannot fail short of a counter overflow (2^64 - 1 notifications); nothing to do about it.
  [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof(one));
}

SigintWatch::Event SigintWatch::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int wait_ms = -1;
    if (timeout.count() >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<int64_t>(left.count(), 0));
    }
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {event_fd_, POLLIN, 0}};
    const int ready = poll(fds, 2, wait_ms);
    if (ready < 0 && errno == EINTR) continue;  // another signal's handler ran
    if (ready <= 0) return Event::kTimeout;     // poll cannot fail otherwise with valid fds
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      [[maybe_unused]] ssize_t n = read(signal_fd_, &info, sizeof(info));
      return Event::kSigint;
    }
    uint64_t count;
    [[maybe_unused]] ssize_t n = read(event_fd_, &count, sizeof(count));
    return Event::kNotified;
  }
}

}  // namespace bitserve::cli
