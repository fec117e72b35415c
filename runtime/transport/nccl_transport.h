// The GPU transport (runtime/transport.h): one NCCL communicator over a pipeline's ranks, moving
// device memory with ncclSend/ncclRecv on a stream of its own. It is bootstrapped only from the
// ncclUniqueId the coordinator makes (NewNcclUniqueId) and sends with each rank's assignment; the
// ranks may sit on one node (NVLink/PCIe) or several (InfiniBand, RoCE or sockets: NCCL picks).
//
// Send and Recv return once the bytes have left or arrived (the stream is polled), so the worker's
// step loop reads as with TCP. A wait ends early on Abort (from another thread: the coordinator
// said stop), or when NCCL reports an error for the communicator (ncclCommGetAsyncError, e.g. a
// peer on another node that vanished); the communicator is then aborted (ncclCommAbort) and every
// later call is UNAVAILABLE. A peer on the same node that dies while this rank waits for it is not
// detected by NCCL: the coordinator's heartbeats notice it and stop the survivors (Abort).
//
// Unlike TCP, NCCL carries no message sizes: both ends must agree on each message's size (the
// step plan says it), and an empty message is no message at all (Send and Recv of 0 bytes do
// nothing), so a failed step cannot be signalled by one.
//
// In a build without NCCL every function here is UNIMPLEMENTED.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/transport/transport.h"

namespace bitserve {

// A fresh ncclUniqueId (kNcclUniqueIdBytes bytes). The calling process runs the bootstrap root
// that the ranks dial while they form the communicator (NCCL_SOCKET_IFNAME picks its interface):
// a new id for every communicator.
inline constexpr int kNcclUniqueIdBytes = 128;
absl::StatusOr<std::string> NewNcclUniqueId();

// The PCI bus id of a CUDA device ("cuda", "cuda:N"), e.g. "0000:19:00.0": two ranks of one
// communicator must not share a GPU.
absl::StatusOr<std::string> CudaPciBusId(const std::string& device);

class NcclTransport final : public Transport {
 public:
  // Joins rank `rank` of `world_size` on `device` ("cuda", "cuda:N") to the communicator of
  // `unique_id`; every rank must call this within `timeout` (DEADLINE_EXCEEDED otherwise).
  static absl::StatusOr<std::unique_ptr<NcclTransport>> Connect(const std::string& unique_id,
                                                                int rank, int world_size,
                                                                const std::string& device,
                                                                std::chrono::milliseconds timeout);
  ~NcclTransport() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int device() const;  // the CUDA device index
  // `data` is device memory on this transport's device.
  absl::Status Send(int peer, const void* data, int64_t bytes) override;
  absl::Status Recv(int peer, void* data, int64_t bytes) override;
  void Abort() override;

  // One grouped round of messages (ncclGroupStart .. ncclGroupEnd): every send and receive at
  // once, so ranks that send each other in both directions cannot deadlock, and copies within
  // this rank (peer == rank(): `send` to `recv`, device to device). Exactly one of send / recv is
  // set for another peer; messages of 0 bytes are skipped. Returns once all have completed; an
  // error ends the communicator as Send and Recv do. `what` names the round in errors.
  struct Message {
    int peer = 0;
    const void* send = nullptr;
    void* recv = nullptr;
    int64_t bytes = 0;
  };
  absl::Status Exchange(std::span<const Message> messages, const std::string& what);

  struct State;  // NCCL and CUDA handles (nccl_transport.cc)

 private:
  NcclTransport(int rank, int world_size, std::unique_ptr<State> state);
  int rank_, world_size_;
  std::unique_ptr<State> state_;
};

}  // namespace bitserve
