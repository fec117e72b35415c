#include "runtime/transport/transport_expert_exchange.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace bitserve {

absl::StatusOr<std::unique_ptr<TransportExpertExchange>> TransportExpertExchange::Create(
    std::shared_ptr<Transport> transport, std::vector<int> group, int rank,
    ExpertResultDtype result_dtype) {
  if (transport == nullptr) return absl::InvalidArgumentError("expert exchange: no transport");
  RETURN_IF_ERROR(CheckGroup(group, rank, transport->world_size(), transport->rank()));
  return std::unique_ptr<TransportExpertExchange>(
      new TransportExpertExchange(std::move(transport), std::move(group), rank, result_dtype));
}

template <typename Send, typename Recv>
absl::Status TransportExpertExchange::AllToAll(const char* what, Send send, Recv recv) {
  RETURN_IF_ERROR(broken_);
  const int n = group_size();
  absl::Status sent;
  std::thread sender([&] {
    for (int k = 1; k < n && sent.ok(); ++k) {
      const int p = (rank_ + k) % n;
      if (absl::Status s = send(p); !s.ok()) {
        sent = absl::Status(s.code(), absl::StrCat(what, " to EP rank ", p, ": ", s.message()));
        transport_->Abort();  // the receives below would wait for a group that is out of step
      }
    }
  });
  absl::Status received;
  for (int k = 1; k < n && received.ok(); ++k) {
    const int p = (rank_ + n - k) % n;
    if (absl::Status s = recv(p); !s.ok()) {
      received = absl::Status(s.code(), absl::StrCat(what, " from EP rank ", p, ": ", s.message()));
    }
  }
  if (!received.ok()) transport_->Abort();  // wakes a sender blocked on a full socket
  sender.join();
  broken_ = !received.ok() ? received : sent;
  return broken_;
}

void TransportExpertExchange::CopyOwnRows(const void* from, void* to, int64_t per_row) const {
  const int64_t rows = sent_[rank_ + 1] - sent_[rank_];
  if (rows == 0) return;
  std::memcpy(static_cast<char*>(to) + received_[rank_] * per_row,
              static_cast<const char*>(from) + sent_[rank_] * per_row, rows * per_row);
}

absl::Status TransportExpertExchange::ExchangeCounts(std::span<const int64_t> send_counts,
                                                     std::span<int64_t> recv_counts) {
  const Timed timed(*this);
  RETURN_IF_ERROR(broken_);
  RETURN_IF_ERROR(CheckCounts(send_counts, recv_counts));
  const int n = group_size();
  recv_counts[rank_] = send_counts[rank_];
  auto send = [&](int p) { return transport_->Send(group_[p], &send_counts[p], 8); };
  auto recv = [&](int p) -> absl::Status {
    RETURN_IF_ERROR(transport_->Recv(group_[p], &recv_counts[p], 8));
    if (recv_counts[p] < 0) return absl::InternalError(absl::StrCat("a count of ", recv_counts[p]));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(AllToAll("expert counts", send, recv));
  for (int p = 0; p < n; ++p) {
    sent_[p + 1] = sent_[p] + send_counts[p];
    received_[p + 1] = received_[p] + recv_counts[p];
  }
  return absl::OkStatus();
}

absl::Status TransportExpertExchange::Dispatch(int64_t hidden, const int8_t* send_values,
                                               const float* send_scales,
                                               const int32_t* send_experts, int8_t* recv_values,
                                               float* recv_scales, int32_t* recv_experts) {
  const Timed timed(*this);
  CopyOwnRows(send_values, recv_values, hidden);
  CopyOwnRows(send_scales, recv_scales, 4);
  CopyOwnRows(send_experts, recv_experts, 4);
  // Three messages a peer: the rows' values, scales and expert ids.
  auto send = [&](int p) -> absl::Status {
    const int64_t first = sent_[p], rows = sent_[p + 1] - sent_[p];
    RETURN_IF_ERROR(transport_->Send(group_[p], send_values + first * hidden, rows * hidden));
    RETURN_IF_ERROR(transport_->Send(group_[p], send_scales + first, rows * 4));
    return transport_->Send(group_[p], send_experts + first, rows * 4);
  };
  auto recv = [&](int p) -> absl::Status {
    const int64_t first = received_[p], rows = received_[p + 1] - received_[p];
    RETURN_IF_ERROR(transport_->Recv(group_[p], recv_values + first * hidden, rows * hidden));
    RETURN_IF_ERROR(transport_->Recv(group_[p], recv_scales + first, rows * 4));
    return transport_->Recv(group_[p], recv_experts + first, rows * 4);
  };
  return AllToAll("expert dispatch", send, recv);
}

absl::Status TransportExpertExchange::Combine(int64_t hidden, const void* results, void* back) {
  const Timed timed(*this);
  RETURN_IF_ERROR(broken_);
  const int64_t row_bytes = hidden * ExpertResultBytes(result_dtype_);
  // Results go back the way the rows came: what was received from p is sent to p.
  const int64_t own = sent_[rank_ + 1] - sent_[rank_];
  if (own > 0) {
    std::memcpy(static_cast<char*>(back) + sent_[rank_] * row_bytes,
                static_cast<const char*>(results) + received_[rank_] * row_bytes, own * row_bytes);
  }
  auto send = [&](int p) {
    return transport_->Send(group_[p], static_cast<const char*>(results) + received_[p] * row_bytes,
                            (received_[p + 1] - received_[p]) * row_bytes);
  };
  auto recv = [&](int p) {
    return transport_->Recv(group_[p], static_cast<char*>(back) + sent_[p] * row_bytes,
                            (sent_[p + 1] - sent_[p]) * row_bytes);
  };
  return AllToAll("expert combine", send, recv);
}

}  // namespace bitserve
