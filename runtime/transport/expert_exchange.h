// The all-to-all of expert parallelism (DESIGN.md "Parallelism"): at each MoE layer every rank of
// an EP group sends the (token, chosen expert) rows of its own tokens to the ranks that own those
// experts, the owners run their experts over what they received, and the results go back to the
// rows' origins, which combine them in top-k order. Dropless: every row is sent, whatever the
// load. The engine (runtime/engine/cpu_engine.cc MoeFfn) sees only this interface; the TCP
// implementation (transport_expert_exchange.h) runs over any host-memory Transport, an NCCL one
// will keep rows in device memory.
//
// Dispatch, per pair of ranks: first the row count (so the receiver can size its buffers), then
// the rows: each the token's int8 quantized input [hidden] (ActQuant of the post-attention norm,
// which the expert quantizes anyway, so nothing is lost), its fp32 scale and the expert id.
// Combine sends back one result row [hidden] per row received, in the order received, as
// result_dtype: fp32 on the CPU path, so that EP equals the single-process engine bit for bit;
// bf16 halves the bytes (the GPU path). Every rank takes part in every exchange of a step, with
// zero rows when it has none: the group runs in lockstep.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace bitserve {

enum class ExpertResultDtype { kF32, kBf16 };

// Rows sent to one peer (or received from one): n rows of `hidden` int8 values each.
struct ExpertRows {
  std::vector<int8_t> values;    // [n, hidden]
  std::vector<float> scales;     // [n]
  std::vector<int32_t> experts;  // [n]: the routed expert (global id) each row goes through

  int64_t size() const { return static_cast<int64_t>(scales.size()); }
  void clear() {
    values.clear();
    scales.clear();
    experts.clear();
  }
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;

  virtual int rank() const = 0;        // in the EP group, [0, group_size)
  virtual int group_size() const = 0;  // E
  virtual ExpertResultDtype result_dtype() const = 0;

  // to_peers[p]: the rows for rank p (to_peers[rank()] stays here). Fills from_peers[p] with the
  // rows rank p sent this rank. UNAVAILABLE naming the peer rank when one is gone; after any
  // error the exchange is broken (the group is out of step) and every later call fails.
  virtual absl::Status Dispatch(int64_t hidden, std::span<const ExpertRows> to_peers,
                                std::vector<ExpertRows>* from_peers) = 0;
  // results[p]: [rows from p, hidden] fp32, for the rows Dispatch received from p, in that order.
  // Fills back[p] with the results of the rows this rank sent to p, in the order sent (rounded
  // through result_dtype on the way).
  virtual absl::Status Combine(int64_t hidden, std::span<const std::vector<float>> results,
                               std::vector<std::vector<float>>* back) = 0;
};

}  // namespace bitserve
