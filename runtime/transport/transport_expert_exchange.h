// ExpertExchange (expert_exchange.h) over a host-memory Transport: the TCP transport of CPU
// workers. The EP group is a subset of the transport's ranks (with pipeline stages, one stage's
// ranks), named by their transport ranks in EP-rank order. Each message carries its length
// (transport.h), so a peer out of step shows as an error, not as garbage.
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
  bool device_memory() const override { return false; }
  absl::Status ExchangeCounts(std::span<const int64_t> send_counts,
                              std::span<int64_t> recv_counts) override;
  absl::Status Dispatch(int64_t hidden, const int8_t* send_values, const float* send_scales,
                        const int32_t* send_experts, int8_t* recv_values, float* recv_scales,
                        int32_t* recv_experts) override;
  absl::Status Combine(int64_t hidden, const void* results, void* back) override;

 private:
  TransportExpertExchange(std::shared_ptr<Transport> transport, std::vector<int> group, int rank,
                          ExpertResultDtype result_dtype)
      : transport_(std::move(transport)),
        group_(std::move(group)),
        rank_(rank),
        result_dtype_(result_dtype),
        sent_(group_.size() + 1, 0),
        received_(group_.size() + 1, 0) {}
  // Runs send(p) for every peer on a second thread and recv(p) here; the first error (naming the
  // EP rank) breaks the exchange.
  template <typename Send, typename Recv>
  absl::Status AllToAll(const char* what, Send send, Recv recv);
  // Copies `per_row` bytes a row of this rank's own rows from `from` (grouped as sent) to `to`
  // (grouped as received).
  void CopyOwnRows(const void* from, void* to, int64_t per_row) const;

  std::shared_ptr<Transport> transport_;
  std::vector<int> group_;
  int rank_;
  ExpertResultDtype result_dtype_;
  // Row offsets of the last ExchangeCounts, per peer (group_size + 1 entries): rows sent to peer p
  // are [sent_[p], sent_[p + 1]), rows received from p are [received_[p], received_[p + 1]).
  std::vector<int64_t> sent_, received_;
  absl::Status broken_;
};

}  // namespace bitserve
