// Point-to-point messages between the workers of a pipeline (DESIGN.md "Processes"): NCCL between
// GPUs, TCP between CPU workers (runtime/tcp_transport.h), one interface, so every distributed
// path also runs in CI without GPUs. Messages between two ranks arrive in the order sent; the
// receiver knows each message's size from the step plan both sides hold, as NCCL requires.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace bitserve {

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // `data` is host memory for the TCP transport, device memory for NCCL. A peer that is gone is
  // UNAVAILABLE naming its rank; a receive whose size differs from what was sent is INTERNAL.
  virtual absl::Status Send(int peer, const void* data, int64_t bytes) = 0;
  virtual absl::Status Recv(int peer, void* data, int64_t bytes) = 0;

  // From another thread: makes every Send and Recv in progress or to come fail at once (the
  // worker was told to stop while it waited for a peer).
  virtual void Abort() = 0;
};

}  // namespace bitserve
