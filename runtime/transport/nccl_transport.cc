#include "runtime/transport/nccl_transport.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/device_name.h"

#if BITSERVE_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace bitserve {

#if BITSERVE_WITH_NCCL

namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<int> ParseCudaDevice(const std::string& device) {
  if (!IsCudaDevice(device)) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL needs a CUDA device (cuda or cuda:N), not \"", device, "\""));
  }
  return CudaDeviceIndex(device);
}

absl::Status CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

absl::Status NcclError(ncclResult_t r, const std::string& what, ncclComm_t comm) {
  const char* last = comm != nullptr ? ncclGetLastError(comm) : nullptr;
  return absl::UnavailableError(
      absl::StrCat("NCCL ", what, ": ", ncclGetErrorString(r),
                   last != nullptr && *last != '\0' ? absl::StrCat(" (", last, ")") : ""));
}

// Short waits spin (a decode step's message arrives within microseconds of the peer's kernel), long
// ones sleep.
void Pause(Clock::time_point since) {
  if (Clock::now() - since < std::chrono::milliseconds(2)) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

struct NcclTransport::State {
  int device = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  std::atomic<bool> abort_requested{false};
  bool aborted = false;
  std::string why;  // what ended the communicator

  // Polls until the communicator's pending work is enqueued and the stream is idle.
  absl::Status Wait(const std::string& what) {
    const auto start = Clock::now();
    while (true) {
      if (abort_requested.load())
        return End(absl::UnavailableError(absl::StrCat(what, ": the transport was aborted")));
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
      if (r != ncclSuccess) return End(NcclError(r, what, comm));
      if (state != ncclSuccess && state != ncclInProgress) return End(NcclError(state, what, comm));
      if (state == ncclSuccess) {
        const cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess) return absl::OkStatus();
        if (e != cudaErrorNotReady) return End(CudaError(e, what.c_str()));
      }
      Pause(start);
    }
  }
  absl::Status End(absl::Status why_status) {
    if (!aborted) {
      ncclCommAbort(comm);
      aborted = true;
      why = std::string(why_status.message());
    }
    return why_status;
  }
  absl::Status Usable() const {
    if (aborted)
      return absl::UnavailableError(absl::StrCat("the NCCL communicator was aborted: ", why));
    if (abort_requested.load()) return absl::UnavailableError("the transport was aborted");
    return absl::OkStatus();
  }
};

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  if (const ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
    return NcclError(r, "ncclGetUniqueId", nullptr);
  static_assert(sizeof(id.internal) == kNcclUniqueIdBytes);
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::string> CudaPciBusId(const std::string& device) {
  auto index = ParseCudaDevice(device);
  if (!index.ok()) return index.status();
  char bus[64] = {};
  if (const cudaError_t e = cudaDeviceGetPCIBusId(bus, sizeof bus, *index); e != cudaSuccess) {
    cudaGetLastError();
    return CudaError(e, absl::StrCat("cudaDeviceGetPCIBusId(", device, ")").c_str());
  }
  return std::string(bus);
}

absl::StatusOr<std::unique_ptr<NcclTransport>> NcclTransport::Connect(
    const std::string& unique_id, int rank, int world_size, const std::string& device,
    std::chrono::milliseconds timeout) {
  if (unique_id.size() != kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the NCCL unique id has ", unique_id.size(),
                                                   " bytes, not ", kNcclUniqueIdBytes));
  }
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " of ", world_size));
  }
  auto index = ParseCudaDevice(device);
  if (!index.ok()) return index.status();
  auto state = std::make_unique<State>();
  state->device = *index;
  if (absl::Status s = CudaError(cudaSetDevice(*index), "cudaSetDevice"); !s.ok()) return s;
  if (absl::Status s = CudaError(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking),
                                 "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  ncclUniqueId id;
  std::copy(unique_id.begin(), unique_id.end(), id.internal);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // init and ops return at once; State::Wait polls, so a wait can be aborted
  ncclResult_t r = ncclCommInitRankConfig(&state->comm, world_size, id, rank, &config);
  std::unique_ptr<NcclTransport> transport(new NcclTransport(rank, world_size, std::move(state)));
  State& st = *transport->state_;
  if (r != ncclSuccess && r != ncclInProgress) {
    if (st.comm != nullptr) st.End(NcclError(r, "ncclCommInitRankConfig", st.comm)).IgnoreError();
    return NcclError(
        r, absl::StrCat("ncclCommInitRankConfig (rank ", rank, " of ", world_size, ")"), nullptr);
  }
  const auto deadline = Clock::now() + timeout;
  const auto start = Clock::now();
  while (true) {
    ncclResult_t state = ncclSuccess;
    r = ncclCommGetAsyncError(st.comm, &state);
    if (r != ncclSuccess) return st.End(NcclError(r, "forming the communicator", st.comm));
    if (state == ncclSuccess) break;
    if (state != ncclInProgress)
      return st.End(NcclError(state, "forming the communicator", st.comm));
    if (Clock::now() > deadline) {
      return st.End(absl::DeadlineExceededError(absl::StrCat(
          "the NCCL communicator of ", world_size, " ranks did not form within ", timeout.count(),
          " ms (this is rank ", rank,
          "; are the other workers up, and can every rank reach the "
          "coordinator's NCCL bootstrap and the others? NCCL_SOCKET_IFNAME picks the interface)")));
    }
    Pause(start);
  }
  return transport;
}

NcclTransport::NcclTransport(int rank, int world_size, std::unique_ptr<State> state)
    : rank_(rank), world_size_(world_size), state_(std::move(state)) {}

NcclTransport::~NcclTransport() {
  // Abort, not destroy: a destroy may wait for peers that are gone.
  if (state_->comm != nullptr && !state_->aborted) ncclCommAbort(state_->comm);
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
}

absl::Status NcclTransport::Send(int peer, const void* data, int64_t bytes) {
  if (absl::Status s = state_->Usable(); !s.ok()) return s;
  if (peer < 0 || peer >= world_size_ || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " cannot send to rank ", peer));
  }
  if (bytes == 0) return absl::OkStatus();
  const std::string what = absl::StrCat("send of ", bytes, " bytes to rank ", peer);
  cudaSetDevice(state_->device);
  const ncclResult_t r =
      ncclSend(data, static_cast<size_t>(bytes), ncclInt8, peer, state_->comm, state_->stream);
  if (r != ncclSuccess && r != ncclInProgress) return state_->End(NcclError(r, what, state_->comm));
  return state_->Wait(what);
}

absl::Status NcclTransport::Recv(int peer, void* data, int64_t bytes) {
  if (absl::Status s = state_->Usable(); !s.ok()) return s;
  if (peer < 0 || peer >= world_size_ || peer == rank_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, " cannot receive from rank ", peer));
  }
  if (bytes == 0) return absl::OkStatus();
  const std::string what = absl::StrCat("receive of ", bytes, " bytes from rank ", peer);
  cudaSetDevice(state_->device);
  const ncclResult_t r =
      ncclRecv(data, static_cast<size_t>(bytes), ncclInt8, peer, state_->comm, state_->stream);
  if (r != ncclSuccess && r != ncclInProgress) return state_->End(NcclError(r, what, state_->comm));
  return state_->Wait(what);
}

absl::Status NcclTransport::Exchange(std::span<const Message> messages, const std::string& what) {
  if (absl::Status s = state_->Usable(); !s.ok()) return s;
  for (const Message& m : messages) {
    const bool copy = m.peer == rank_;
    if (m.peer < 0 || m.peer >= world_size_ || m.bytes < 0 ||
        (copy ? (m.send == nullptr || m.recv == nullptr)
              : ((m.send == nullptr) == (m.recv == nullptr)))) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": a message for rank ", m.peer, " of ",
                                                     world_size_, " is malformed"));
    }
  }
  cudaSetDevice(state_->device);
  for (const Message& m : messages) {
    if (m.peer != rank_ || m.bytes == 0) continue;
    if (const cudaError_t e = cudaMemcpyAsync(m.recv, m.send, static_cast<size_t>(m.bytes),
                                              cudaMemcpyDeviceToDevice, state_->stream);
        e != cudaSuccess) {
      return state_->End(CudaError(e, what.c_str()));
    }
  }
  ncclResult_t r = ncclGroupStart();
  for (const Message& m : messages) {
    if (r != ncclSuccess && r != ncclInProgress) break;
    if (m.peer == rank_ || m.bytes == 0) continue;
    r = m.send != nullptr ? ncclSend(m.send, static_cast<size_t>(m.bytes), ncclInt8, m.peer,
                                     state_->comm, state_->stream)
                          : ncclRecv(m.recv, static_cast<size_t>(m.bytes), ncclInt8, m.peer,
                                     state_->comm, state_->stream);
  }
  const ncclResult_t end = ncclGroupEnd();
  if (r == ncclSuccess || r == ncclInProgress) r = end;
  if (r != ncclSuccess && r != ncclInProgress) return state_->End(NcclError(r, what, state_->comm));
  return state_->Wait(what);
}

void NcclTransport::Abort() { state_->abort_requested.store(true); }

int NcclTransport::device() const { return state_->device; }

#else  // !BITSERVE_WITH_NCCL

struct NcclTransport::State {};

namespace {
absl::Status NoNccl() { return absl::UnimplementedError("this bitserve was built without NCCL"); }
}  // namespace

absl::StatusOr<std::string> NewNcclUniqueId() { return NoNccl(); }
absl::StatusOr<std::string> CudaPciBusId(const std::string&) { return NoNccl(); }
absl::StatusOr<std::unique_ptr<NcclTransport>> NcclTransport::Connect(const std::string&, int, int,
                                                                      const std::string&,
                                                                      std::chrono::milliseconds) {
  return NoNccl();
}
NcclTransport::NcclTransport(int rank, int world_size, std::unique_ptr<State> state)
    : rank_(rank), world_size_(world_size), state_(std::move(state)) {}
NcclTransport::~NcclTransport() = default;
absl::Status NcclTransport::Send(int, const void*, int64_t) { return NoNccl(); }
absl::Status NcclTransport::Recv(int, void*, int64_t) { return NoNccl(); }
absl::Status NcclTransport::Exchange(std::span<const Message>, const std::string&) {
  return NoNccl();
}
void NcclTransport::Abort() {}
int NcclTransport::device() const { return 0; }

#endif

}  // namespace bitserve
