// ExpertExchange (expert_exchange.h) over NCCL: device memory moved by grouped ncclSend/ncclRecv
// (NcclTransport::Exchange) between the ranks of an EP group, which are some of the
// communicator's ranks (with pipeline stages, one stage's). Each of the three exchanges of an MoE
// layer is one grouped round: the counts (8 bytes a peer), the rows (values, scales and expert
// ids a peer), the results. A rank's own rows are device-to-device copies in the same round.
// NCCL carries no sizes: both ends know every message's size from the counts exchanged first.
// In a build without NCCL, Create is UNIMPLEMENTED.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/transport/expert_exchange.h"
#include "runtime/transport/nccl_transport.h"

namespace bitserve {

class NcclExpertExchange final : public ExpertExchange {
 public:
  // group[i]: the communicator rank of EP rank i; this process is EP rank `rank`, which must be
  // transport->rank(). InvalidArgument naming the mismatch otherwise.
  static absl::StatusOr<std::unique_ptr<NcclExpertExchange>> Create(
      std::shared_ptr<NcclTransport> transport, std::vector<int> group, int rank,
      ExpertResultDtype result_dtype = ExpertResultDtype::kF32);
  ~NcclExpertExchange() override;

  int rank() const override { return rank_; }
  int group_size() const override { return static_cast<int>(group_.size()); }
  ExpertResultDtype result_dtype() const override { return result_dtype_; }
  bool device_memory() const override { return true; }
  absl::Status ExchangeCounts(std::span<const int64_t> send_counts,
                              std::span<int64_t> recv_counts) override;
  absl::Status Dispatch(int64_t hidden, const int8_t* send_values, const float* send_scales,
                        const int32_t* send_experts, int8_t* recv_values, float* recv_scales,
                        int32_t* recv_experts) override;
  absl::Status Combine(int64_t hidden, const void* results, void* back) override;

 private:
  NcclExpertExchange(std::shared_ptr<NcclTransport> transport, std::vector<int> group, int rank,
                     ExpertResultDtype result_dtype);
  // One round: for every EP rank p (this one included, a copy), `rows_to(p)` rows of `row_bytes`
  // from `send` at its sent offset, and rows from p into `recv` at its received offset.
  absl::Status Round(const char* what, const void* send, void* recv, int64_t row_bytes);

  std::shared_ptr<NcclTransport> transport_;
  std::vector<int> group_;
  int rank_;
  ExpertResultDtype result_dtype_;
  // Row offsets of the last ExchangeCounts (group_size + 1 entries each).
  std::vector<int64_t> sent_, received_;
  // The counts in device memory and their pinned host copy: [group_size] to send, [group_size]
  // received (pinned: a copy to the device has completed when cudaMemcpy returns).
  int64_t* device_counts_ = nullptr;
  int64_t* host_counts_ = nullptr;
  absl::Status broken_;
};

}  // namespace bitserve
