// ExpertExchange (expert_exchange.h) over a host-memory Transport: the TCP transport of CPU
// workers (and of GPU workers whose messages go through host memory). The EP group is a subset
// of the transport's ranks (with pipeline stages, one stage's ranks), named by their transport
// ranks in EP-rank order.
//
// Each exchange sends to every peer on a thread of its own while this thread receives from every
// peer, so that two ranks sending each other more than a socket buffer holds cannot deadlock.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/transport/expert_exchange.h"
#include "runtime/transport/transport.h"

namespace bitserve {

class TransportExpertExchange final : public ExpertExchange {
 public:
  // group[i]: the transport rank of EP rank i; this process is EP rank `rank`, which must be
  // transport->rank(). InvalidArgument naming the mismatch otherwise.
  static absl::StatusOr<std::unique_ptr<TransportExpertExchange>> Create(
      std::shared_ptr<Transport> transport, std::vector<int> group, int rank,
      ExpertResultDtype result_dtype = ExpertResultDtype::kF32);

  int rank() const override { return rank_; }
  int group_size() const override { return static_cast<int>(group_.size()); }
  ExpertResultDtype result_dtype() const override { return result_dtype_; }
  absl::Status Dispatch(int64_t hidden, std::span<const ExpertRows> to_peers,
                        std::vector<ExpertRows>* from_peers) override;
  absl::Status Combine(int64_t hidden, std::span<const std::vector<float>> results,
                       std::vector<std::vector<float>>* back) override;

 private:
  TransportExpertExchange(std::shared_ptr<Transport> transport, std::vector<int> group, int rank,
                          ExpertResultDtype result_dtype)
      : transport_(std::move(transport)),
        group_(std::move(group)),
        rank_(rank),
        result_dtype_(result_dtype),
        sent_(group_.size(), 0),
        received_(group_.size(), 0) {}
  // Runs send(p) for every peer on a second thread and recv(p) here; the first error (naming the
  // EP rank) breaks the exchange.
  template <typename Send, typename Recv>
  absl::Status AllToAll(const char* what, Send send, Recv recv);

  std::shared_ptr<Transport> transport_;
  std::vector<int> group_;
  int rank_;
  ExpertResultDtype result_dtype_;
  std::vector<int64_t> sent_, received_;  // rows of the last Dispatch, per peer
  absl::Status broken_;
};

}  // namespace bitserve
