#include "runtime/transport/tcp_transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Waits until fd is readable (or writable) within `timeout`.
absl::Status WaitFor(int fd, short events, std::chrono::milliseconds timeout,
                     const std::string& what) {
  pollfd p{fd, events, 0};
  while (true) {
    const int r = poll(&p, 1, static_cast<int>(timeout.count()));
    if (r > 0) return absl::OkStatus();
    if (r == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": nothing within ", timeout.count(), " ms"));
    }
    if (errno != EINTR) return Errno(what);
  }
}

absl::Status WriteAll(int fd, const void* data, int64_t bytes, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = send(fd, p, static_cast<size_t>(bytes), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(what);
    }
    p += n;
    bytes -= n;
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, void* data, int64_t bytes, std::chrono::milliseconds timeout,
                     const std::string& what) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    RETURN_IF_ERROR(WaitFor(fd, POLLIN, timeout, what));
    const ssize_t n = recv(fd, p, static_cast<size_t>(bytes), 0);
    if (n == 0)
      return absl::UnavailableError(absl::StrCat(what, ": the peer closed the connection"));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(what);
    }
    p += n;
    bytes -= n;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, int>> SplitAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("transport address \"", address, "\" is not host:port"));
  }
  const int port = std::atoi(address.c_str() + colon + 1);
  if (port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("transport address \"", address, "\" has no valid port"));
  }
  return std::make_pair(address.substr(0, colon), port);
}

void NoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Dials host:port until it answers or the deadline passes (the peer may not listen yet).
absl::StatusOr<int> Dial(const std::string& address, Clock::time_point deadline) {
  ASSIGN_OR_RETURN(auto host_port, SplitAddress(address));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  while (true) {
    addrinfo* found = nullptr;
    const int rc = getaddrinfo(host_port.first.c_str(), std::to_string(host_port.second).c_str(),
                               &hints, &found);
    if (rc == 0) {
      for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
        const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          freeaddrinfo(found);
          NoDelay(fd);
          return fd;
        }
        close(fd);
      }
      freeaddrinfo(found);
    }
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("cannot connect to transport peer ", address));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpListener>> TcpListener::Listen(const std::string& host,
                                                                 int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("transport host \"", host, "\" does not resolve"));
  }
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    absl::Status s = Errno(absl::StrCat("listening on ", host, ":", port));
    freeaddrinfo(found);
    if (fd >= 0) close(fd);
    return s;
  }
  freeaddrinfo(found);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port = bound.ss_family == AF_INET6
                             ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                             : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<TcpListener>(new TcpListener(fd, absl::StrCat(host, ":", bound_port)));
}

TcpListener::~TcpListener() { close(fd_); }

absl::StatusOr<int> TcpListener::Accept(std::chrono::milliseconds timeout) {
  RETURN_IF_ERROR(
      WaitFor(fd_, POLLIN, timeout, absl::StrCat("waiting for transport peers on ", address_)));
  const int fd = accept(fd_, nullptr, nullptr);
  if (fd < 0) return Errno("accept");
  NoDelay(fd);
  return fd;
}

absl::StatusOr<std::unique_ptr<TcpTransport>> TcpTransport::Connect(
    std::unique_ptr<TcpListener> listener, int rank, const std::vector<std::string>& peers,
    std::chrono::milliseconds connect_timeout, std::chrono::milliseconds recv_timeout) {
  const int world = static_cast<int>(peers.size());
  if (rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("transport rank ", rank, " of ", world));
  }
  std::vector<int> fds(world, -1);
  auto cleanup = [&] {
    for (int& fd : fds) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  };
  const auto deadline = Clock::now() + connect_timeout;
  for (int peer = 0; peer < rank; ++peer) {
    auto fd = Dial(peers[peer], deadline);
    if (!fd.ok()) {
      cleanup();
      return fd.status();
    }
    fds[peer] = *fd;
    const int32_t me = rank;
    if (absl::Status s = WriteAll(*fd, &me, 4, "transport hello"); !s.ok()) {
      cleanup();
      return s;
    }
  }
  for (int accepted = 0; accepted < world - 1 - rank; ++accepted) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto fd = listener->Accept(std::max(left, std::chrono::milliseconds(1)));
    if (!fd.ok()) {
      cleanup();
      return fd.status();
    }
    int32_t peer = -1;
    absl::Status s =
        ReadAll(*fd, &peer, 4, std::max(left, std::chrono::milliseconds(1)), "transport hello");
    if (s.ok() && (peer <= rank || peer >= world || fds[peer] >= 0)) {
      s = absl::InvalidArgumentError(
          absl::StrCat("transport rank ", rank, ": unexpected hello from rank ", peer));
    }
    if (!s.ok()) {
      close(*fd);
      cleanup();
      return s;
    }
    fds[peer] = *fd;
  }
  return std::unique_ptr<TcpTransport>(new TcpTransport(rank, std::move(fds), recv_timeout));
}

TcpTransport::~TcpTransport() {
  for (int fd : fds_) {
    if (fd >= 0) close(fd);
  }
}

void TcpTransport::Abort() {
  // shutdown() wakes a thread blocked in poll/recv on the socket; close() stays with the
  // destructor.
  for (int fd : fds_) {
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
  }
}

absl::Status TcpTransport::CheckPeer(int peer) const {
  if (peer < 0 || peer >= world_size() || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat("transport rank ", rank_, ": no peer ", peer));
  }
  return absl::OkStatus();
}

absl::Status TcpTransport::Send(int peer, const void* data, int64_t bytes) {
  RETURN_IF_ERROR(CheckPeer(peer));
  const std::string what = absl::StrCat("sending to transport rank ", peer);
  const uint64_t length = static_cast<uint64_t>(bytes);
  RETURN_IF_ERROR(WriteAll(fds_[peer], &length, 8, what));
  return WriteAll(fds_[peer], data, bytes, what);
}

absl::Status TcpTransport::Recv(int peer, void* data, int64_t bytes) {
  RETURN_IF_ERROR(CheckPeer(peer));
  const std::string what = absl::StrCat("receiving from transport rank ", peer);
  uint64_t length = 0;
  RETURN_IF_ERROR(ReadAll(fds_[peer], &length, 8, recv_timeout_, what));
  if (length != static_cast<uint64_t>(bytes)) {
    return absl::InternalError(
        absl::StrCat(what, ": a message of ", length, " bytes, expected ", bytes));
  }
  return ReadAll(fds_[peer], data, bytes, recv_timeout_, what);
}

}  // namespace bitserve
