// The CPU transport: one TCP connection per pair of ranks, with NCCL's semantics (ordered
// messages per pair, sizes known to both sides). Each message is an 8-byte length and the bytes;
// the length lets a receiver name a mismatch instead of reading garbage.
//
// Bootstrap: every rank listens first (TcpListener, its address goes to the coordinator in
// Register.transport_address); once all addresses are known each rank dials the ranks below it and
// accepts the ranks above it; a connection opens with the dialer's rank.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/transport/transport.h"

namespace bitserve {

class TcpListener {
 public:
  // Listens on host:port (port 0: any free port). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<TcpListener>> Listen(const std::string& host, int port = 0);
  ~TcpListener();
  // host:port as peers should dial it.
  const std::string& address() const { return address_; }
  // The next connection within `timeout`, or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Accept(std::chrono::milliseconds timeout);

 private:
  TcpListener(int fd, std::string address) : fd_(fd), address_(std::move(address)) {}
  int fd_;
  std::string address_;
};

class TcpTransport final : public Transport {
 public:
  // Connects rank `rank` to every other rank of `peers` (index = rank; this rank's own entry is
  // its listener's address). DEADLINE_EXCEEDED when a peer does not connect within
  // `connect_timeout`. A Recv waits at most `recv_timeout` for its message.
  static absl::StatusOr<std::unique_ptr<TcpTransport>> Connect(
      std::unique_ptr<TcpListener> listener, int rank, const std::vector<std::string>& peers,
      std::chrono::milliseconds connect_timeout = std::chrono::seconds(60),
      std::chrono::milliseconds recv_timeout = std::chrono::minutes(10));
  ~TcpTransport() override;

  int rank() const override { return rank_; }
  int world_size() const override { return static_cast<int>(fds_.size()); }
  absl::Status Send(int peer, const void* data, int64_t bytes) override;
  absl::Status Recv(int peer, void* data, int64_t bytes) override;
  void Abort() override;

 private:
  TcpTransport(int rank, std::vector<int> fds, std::chrono::milliseconds recv_timeout)
      : rank_(rank), fds_(std::move(fds)), recv_timeout_(recv_timeout) {}
  absl::Status CheckPeer(int peer) const;

  int rank_;
  std::vector<int> fds_;  // index = peer rank; -1 for this rank
  std::chrono::milliseconds recv_timeout_;
};

}  // namespace bitserve
