// The all-to-all of expert parallelism (DESIGN.md "Parallelism"): at each MoE layer every rank of
// an EP group sends the (token, chosen expert) rows of its own tokens to the ranks that own those
// experts, the owners run their experts over what they received, and the results go back to the
// rows' origins, which combine them in top-k order. Dropless: every row is sent, whatever the
// load. An engine sees only this interface: the TCP implementation (transport_expert_exchange.h)
// moves host memory; an NCCL one will move device memory (device_memory()), with the same calls.
//
// One exchange, as an engine makes it (E ranks; "grouped" = rank 0's rows first, then rank 1's):
//   1. ExchangeCounts: send_counts[p] rows for rank p  ->  recv_counts[p] rows from rank p.
//   2. Dispatch: the rows to send, grouped by destination, each the token's int8 quantized input
//      [hidden] (ActQuant of the post-attention norm, which the expert quantizes anyway: lossless),
//      its fp32 scale and the expert id  ->  the rows received, grouped by origin.
//   3. (the engine runs its experts over the rows received)
//   4. Combine: one result row [hidden] per row received, in the order received  ->  one per row
//      sent, in the order sent. Results travel as result_dtype: fp32 on the CPU path, so that EP
//      equals the single-process engine bit for bit; bf16 halves the bytes (the GPU path).
// Every rank takes part in every exchange of a step, with zero rows when it has none: the group
// runs in lockstep. After any error the exchange is broken (the group is out of step; it is
// rebuilt with the pipeline) and every later call fails with that error.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitserve {

enum class ExpertResultDtype { kF32, kBf16 };
inline int64_t ExpertResultBytes(ExpertResultDtype dtype) {
  return dtype == ExpertResultDtype::kF32 ? 4 : 2;
}

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;

  virtual int rank() const = 0;        // in the EP group, [0, group_size)
  virtual int group_size() const = 0;  // E
  virtual ExpertResultDtype result_dtype() const = 0;
  // Whether the row and result pointers below are device memory (NCCL) or host memory (TCP).
  // Counts are host memory always.
  virtual bool device_memory() const = 0;

  // send_counts and recv_counts have group_size() entries; send_counts[rank()] rows stay here
  // and come back as recv_counts[rank()]. UNAVAILABLE naming the peer's EP rank when it is gone.
  virtual absl::Status ExchangeCounts(std::span<const int64_t> send_counts,
                                      std::span<int64_t> recv_counts) = 0;
  // The rows of the last ExchangeCounts: sum(send_counts) rows to send, sum(recv_counts) rows
  // received (values [rows, hidden] int8, scales [rows] fp32, experts [rows] int32: global ids).
  virtual absl::Status Dispatch(int64_t hidden, const int8_t* send_values, const float* send_scales,
                                const int32_t* send_experts, int8_t* recv_values,
                                float* recv_scales, int32_t* recv_experts) = 0;
  // results: [sum(recv_counts), hidden] of result_dtype, in the order Dispatch received the rows;
  // back: [sum(send_counts), hidden] of result_dtype, in the order Dispatch sent them.
  virtual absl::Status Combine(int64_t hidden, const void* results, void* back) = 0;

  // Seconds spent in the three calls above since the last TakeSeconds (waits for the other ranks
  // included): what dispatch and combine cost a step (the worker reports it per step).
  double TakeSeconds() { return std::exchange(seconds_, 0.0); }

 protected:
  // What every implementation's Create checks: group[i] is the transport rank (of world_size) of
  // EP rank i, and this process is EP rank `rank`, transport rank `transport_rank`.
  static absl::Status CheckGroup(std::span<const int> group, int rank, int world_size,
                                 int transport_rank) {
    if (rank < 0 || rank >= static_cast<int>(group.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert exchange: rank ", rank, " of a group of ", group.size()));
    }
    for (int t : group) {
      if (t < 0 || t >= world_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert exchange: transport rank ", t, " is not one of ", world_size));
      }
    }
    if (group[rank] != transport_rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert exchange: EP rank ", rank, " is transport rank ", group[rank],
                       ", but this transport is rank ", transport_rank));
    }
    return absl::OkStatus();
  }
  // ExchangeCounts' check of its arguments: one count per rank of the group.
  absl::Status CheckCounts(std::span<const int64_t> send_counts,
                           std::span<int64_t> recv_counts) const {
    const int n = group_size();
    if (static_cast<int>(send_counts.size()) != n || static_cast<int>(recv_counts.size()) != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert exchange: counts for ", send_counts.size(), " and ",
                       recv_counts.size(), " ranks in a group of ", n));
    }
    return absl::OkStatus();
  }

  // Adds the time from its construction to its end to seconds_.
  class Timed {
   public:
    explicit Timed(ExpertExchange& x) : x_(x), start_(std::chrono::steady_clock::now()) {}
    ~Timed() {
      x_.seconds_ +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

   private:
    ExpertExchange& x_;
    std::chrono::steady_clock::time_point start_;
  };

 private:
  double seconds_ = 0;
};

}  // namespace bitserve
