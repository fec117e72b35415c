#include "runtime/transport/nccl_expert_exchange.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

#if BITSERVE_WITH_NCCL
#include <cuda_runtime.h>
#endif

namespace bitserve {

#if BITSERVE_WITH_NCCL

namespace {

absl::Status CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclExpertExchange>> NcclExpertExchange::Create(
    std::shared_ptr<NcclTransport> transport, std::vector<int> group, int rank,
    ExpertResultDtype result_dtype) {
  if (transport == nullptr) return absl::InvalidArgumentError("expert exchange: no transport");
  RETURN_IF_ERROR(CheckGroup(group, rank, transport->world_size(), transport->rank()));
  RETURN_IF_ERROR(CudaError(cudaSetDevice(transport->device()), "cudaSetDevice"));
  std::unique_ptr<NcclExpertExchange> exchange(
      new NcclExpertExchange(std::move(transport), std::move(group), rank, result_dtype));
  RETURN_IF_ERROR(CudaError(
      cudaMalloc(&exchange->device_counts_, sizeof(int64_t) * 2 * exchange->group_.size()),
      "cudaMalloc (expert counts)"));
  RETURN_IF_ERROR(CudaError(
      cudaMallocHost(&exchange->host_counts_, sizeof(int64_t) * 2 * exchange->group_.size()),
      "cudaMallocHost (expert counts)"));
  return exchange;
}

NcclExpertExchange::NcclExpertExchange(std::shared_ptr<NcclTransport> transport,
                                       std::vector<int> group, int rank,
                                       ExpertResultDtype result_dtype)
    : transport_(std::move(transport)),
      group_(std::move(group)),
      rank_(rank),
      result_dtype_(result_dtype),
      sent_(group_.size() + 1, 0),
      received_(group_.size() + 1, 0) {}

NcclExpertExchange::~NcclExpertExchange() {
  if (device_counts_ != nullptr) cudaFree(device_counts_);
  if (host_counts_ != nullptr) cudaFreeHost(host_counts_);
}

absl::Status NcclExpertExchange::ExchangeCounts(std::span<const int64_t> send_counts,
                                                std::span<int64_t> recv_counts) {
  const Timed timed(*this);
  RETURN_IF_ERROR(broken_);
  RETURN_IF_ERROR(CheckCounts(send_counts, recv_counts));
  const int n = group_size();
  cudaSetDevice(transport_->device());
  std::copy(send_counts.begin(), send_counts.end(), host_counts_);
  broken_ = CudaError(
      cudaMemcpy(device_counts_, host_counts_, sizeof(int64_t) * n, cudaMemcpyHostToDevice),
      "expert counts to the device");
  RETURN_IF_ERROR(broken_);
  std::vector<NcclTransport::Message> messages;
  for (int p = 0; p < n; ++p) {
    if (p == rank_) continue;
    messages.push_back({group_[p], device_counts_ + p, nullptr, 8});
    messages.push_back({group_[p], nullptr, device_counts_ + n + p, 8});
  }
  broken_ = transport_->Exchange(messages, "expert counts");
  RETURN_IF_ERROR(broken_);
  broken_ = CudaError(
      cudaMemcpy(host_counts_ + n, device_counts_ + n, sizeof(int64_t) * n, cudaMemcpyDeviceToHost),
      "expert counts from the device");
  RETURN_IF_ERROR(broken_);
  std::copy(host_counts_ + n, host_counts_ + 2 * n, recv_counts.begin());
  recv_counts[rank_] = send_counts[rank_];
  for (int p = 0; p < n; ++p) {
    if (recv_counts[p] < 0) {
      broken_ = absl::InternalError(
          absl::StrCat("expert counts: EP rank ", p, " sends a count of ", recv_counts[p]));
      return broken_;
    }
    sent_[p + 1] = sent_[p] + send_counts[p];
    received_[p + 1] = received_[p] + recv_counts[p];
  }
  return absl::OkStatus();
}

absl::Status NcclExpertExchange::Dispatch(int64_t hidden, const int8_t* send_values,
                                          const float* send_scales, const int32_t* send_experts,
                                          int8_t* recv_values, float* recv_scales,
                                          int32_t* recv_experts) {
  const Timed timed(*this);
  RETURN_IF_ERROR(broken_);
  std::vector<NcclTransport::Message> messages;
  const int n = group_size();
  // Per peer (this rank's own rows as copies): values, scales, expert ids.
  for (int k = 0; k < n; ++k) {
    const int p = (rank_ + k) % n;
    const int64_t out = sent_[p], out_rows = sent_[p + 1] - sent_[p];
    const int64_t in = received_[p], in_rows = received_[p + 1] - received_[p];
    const int peer = group_[p];
    if (p == rank_) {
      messages.push_back(
          {peer, send_values + out * hidden, recv_values + in * hidden, out_rows * hidden});
      messages.push_back({peer, send_scales + out, recv_scales + in, out_rows * 4});
      messages.push_back({peer, send_experts + out, recv_experts + in, out_rows * 4});
      continue;
    }
    messages.push_back({peer, send_values + out * hidden, nullptr, out_rows * hidden});
    messages.push_back({peer, send_scales + out, nullptr, out_rows * 4});
    messages.push_back({peer, send_experts + out, nullptr, out_rows * 4});
    messages.push_back({peer, nullptr, recv_values + in * hidden, in_rows * hidden});
    messages.push_back({peer, nullptr, recv_scales + in, in_rows * 4});
    messages.push_back({peer, nullptr, recv_experts + in, in_rows * 4});
  }
  broken_ = transport_->Exchange(messages, "expert dispatch");
  return broken_;
}

absl::Status NcclExpertExchange::Combine(int64_t hidden, const void* results, void* back) {
  const Timed timed(*this);
  RETURN_IF_ERROR(broken_);
  const int64_t row = hidden * ExpertResultBytes(result_dtype_);
  const auto* from = static_cast<const char*>(results);
  auto* to = static_cast<char*>(back);
  std::vector<NcclTransport::Message> messages;
  const int n = group_size();
  // Results go back the way the rows came: what was received from p is sent to p.
  for (int k = 0; k < n; ++k) {
    const int p = (rank_ + k) % n;
    const int peer = group_[p];
    const int64_t in_rows = received_[p + 1] - received_[p];
    const int64_t out_rows = sent_[p + 1] - sent_[p];
    if (p == rank_) {
      messages.push_back({peer, from + received_[p] * row, to + sent_[p] * row, in_rows * row});
      continue;
    }
    messages.push_back({peer, from + received_[p] * row, nullptr, in_rows * row});
    messages.push_back({peer, nullptr, to + sent_[p] * row, out_rows * row});
  }
  broken_ = transport_->Exchange(messages, "expert combine");
  return broken_;
}

#else  // !BITSERVE_WITH_NCCL

absl::StatusOr<std::unique_ptr<NcclExpertExchange>> NcclExpertExchange::Create(
    std::shared_ptr<NcclTransport>, std::vector<int>, int, ExpertResultDtype) {
  return absl::UnimplementedError("this bitserve was built without NCCL");
}
NcclExpertExchange::NcclExpertExchange(std::shared_ptr<NcclTransport> transport,
                                       std::vector<int> group, int rank,
                                       ExpertResultDtype result_dtype)
    : transport_(std::move(transport)),
      group_(std::move(group)),
      rank_(rank),
      result_dtype_(result_dtype) {}
NcclExpertExchange::~NcclExpertExchange() = default;
absl::Status NcclExpertExchange::ExchangeCounts(std::span<const int64_t>, std::span<int64_t>) {
  return absl::UnimplementedError("this bitserve was built without NCCL");
}
absl::Status NcclExpertExchange::Dispatch(int64_t, const int8_t*, const float*, const int32_t*,
                                          int8_t*, float*, int32_t*) {
  return absl::UnimplementedError("this bitserve was built without NCCL");
}
absl::Status NcclExpertExchange::Combine(int64_t, const void*, void*) {
  return absl::UnimplementedError("this bitserve was built without NCCL");
}

#endif

}  // namespace bitserve
