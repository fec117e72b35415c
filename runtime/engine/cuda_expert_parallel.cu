// The MoE block of an expert-parallel CUDA rank (EngineOptions::expert_exchange): MoeFeedForward's
// steps (kernels/cuda/moe/moe_ffn.cuh) with the expert products moved to the ranks that own the
// experts, as the CPU rank does (cpu_expert_parallel.cc):
//   RouteTokens -> each (token, slot) pair keyed by its expert's owner (MapExperts + GroupByExpert
//   over the keys) -> GatherDispatchRows: int8 rows, scales, expert ids grouped by destination
//   -> ExchangeCounts, Dispatch -> LocalExpertRows (sums, local expert index) -> ExpertProducts
//   over every row received -> ResultsInReceivedOrder -> Combine: results back, in the order sent
//   -> SharedExpertAndCombine (top-k order, the shared expert computed here).
// The host waits three times a layer (the counts, the dispatched rows, the results): the exchange
// is host-driven. With results moved as f32 the block's output equals the one-GPU block's bit for
// bit: every row's products are per row, and the combine runs here in top-k order.
// An exchange in device memory (NCCL) reads and writes the buffers directly; one in host memory
// (TCP between processes that may share a GPU) goes through host copies.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/common/cuda_check.cuh"
#include "kernels/cuda/moe/moe_dispatch.cuh"
#include "kernels/cuda/moe/moe_routing.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"
#include "runtime/engine/cuda_engine_class.cuh"

namespace bitserve {
namespace {

// The grouping of the sender's pairs by key uses runs of at most this many rows (only the row
// ranges matter here: no product reads these items).
constexpr int kKeyRowsPerItem = 256;

// Copies in the engine's stream (pageable host memory: a copy to the host has completed when it
// returns; one to the device is ordered before the stream's next kernels).
absl::Status CopyToHost(void* host, const void* device, int64_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream));
  BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}
absl::Status CopyToDevice(void* device, const void* host, int64_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  BITSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaEngine::InitExpertParallel(const EngineOptions& options,
                                            std::vector<int32_t> held) {
  const ModelConfig& c = config();
  expert_exchange_ = options.expert_exchange;
  ep_ = std::make_unique<CudaExpertParallel>();
  CudaExpertParallel& x = *ep_;
  const ExpertExchange& exchange = *expert_exchange_;
  const int experts = c.num_experts;
  x.ranks = exchange.group_size();
  x.owner = options.expert_owner;
  x.held = std::move(held);
  x.result_dtype = exchange.result_dtype();
  // Keys in owner-major order (ascending expert ids within a rank).
  std::vector<int32_t> key_of_expert(experts), expert_of_key, local_index(experts, -1);
  x.first_key.assign(x.ranks + 1, 0);
  for (int p = 0; p < x.ranks; ++p) {
    for (int e = 0; e < experts; ++e) {
      if (x.owner[e] != p) continue;
      key_of_expert[e] = static_cast<int32_t>(expert_of_key.size());
      expert_of_key.push_back(e);
    }
    x.first_key[p + 1] = static_cast<int32_t>(expert_of_key.size());
  }
  for (size_t i = 0; i < x.held.size(); ++i) local_index[x.held[i]] = static_cast<int32_t>(i);
  for (auto [buffer, table] : {std::pair{&x.key_of_expert, &key_of_expert},
                               {&x.expert_of_key, &expert_of_key},
                               {&x.local_index, &local_index}}) {
    RETURN_IF_ERROR(Alloc(buffer, experts));
    RETURN_IF_ERROR(buffer->CopyFromHost(table->data(), experts));
  }
  const int64_t h = c.hidden_size;
  x.row_bytes = cuda::PaddedInputs(h);
  x.max_pairs = int64_t{max_batch_tokens_} * c.num_experts_per_tok;
  const int64_t p = x.max_pairs;
  const int64_t result_bytes = p * h * ExpertResultBytes(x.result_dtype);
  RETURN_IF_ERROR(Alloc(&x.keys, p));
  RETURN_IF_ERROR(Alloc(&x.key_rows, experts + 1));
  RETURN_IF_ERROR(Alloc(&x.source_rows, p));
  RETURN_IF_ERROR(Alloc(&x.row_key, p));
  RETURN_IF_ERROR(Alloc(&x.pair_rows, p));
  RETURN_IF_ERROR(Alloc(&x.num_items, 1));
  RETURN_IF_ERROR(Alloc(&x.items, cuda::MaxGroupedItems(p, experts, kKeyRowsPerItem)));
  for (auto* values : {&x.send_values, &x.recv_values})
    RETURN_IF_ERROR(Alloc(values, p * x.row_bytes));
  for (auto* scales : {&x.send_scales, &x.recv_scales}) RETURN_IF_ERROR(Alloc(scales, p));
  for (auto* ints : {&x.send_experts, &x.recv_experts, &x.recv_sums, &x.recv_local}) {
    RETURN_IF_ERROR(Alloc(ints, p));
  }
  RETURN_IF_ERROR(Alloc(&x.bad, 1));
  RETURN_IF_ERROR(Alloc(&x.results, result_bytes));
  RETURN_IF_ERROR(Alloc(&x.back, result_bytes));
  RETURN_IF_ERROR(Alloc(&x.host_key_rows, experts + 1));
  RETURN_IF_ERROR(Alloc(&x.host_expert_rows, static_cast<int64_t>(x.held.size()) + 1));
  RETURN_IF_ERROR(Alloc(&x.host_bad, 1));
  x.send_counts.assign(x.ranks, 0);
  x.recv_counts.assign(x.ranks, 0);
  const int num_layers = w_.stage.layer_end - w_.stage.layer_begin;
  expert_rows_.assign(static_cast<size_t>(num_layers) * experts, 0);
  for (int64_t bytes :
       {x.keys.bytes(), x.key_rows.bytes(), x.source_rows.bytes(), x.row_key.bytes(),
        x.pair_rows.bytes(), x.items.bytes(), x.send_values.bytes(), x.recv_values.bytes(),
        x.send_scales.bytes(), x.recv_scales.bytes(), x.send_experts.bytes(),
        x.recv_experts.bytes(), x.recv_sums.bytes(), x.recv_local.bytes(), x.results.bytes(),
        x.back.bytes()}) {
    footprint_.scratch_bytes += bytes;
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::EmptyExpertParallelStep() {
  for (int layer = w_.stage.layer_begin; layer < w_.stage.layer_end; ++layer) {
    RETURN_IF_ERROR(ExpertParallelMoe(layer, nullptr, cuda::Int8Activations(), nullptr));
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::ExpertParallelMoe(int layer, const float* n,
                                           const cuda::Int8Activations& nq, float* out) {
  CudaExpertParallel& x = *ep_;
  ExpertExchange& exchange = *expert_exchange_;
  const ModelConfig& c = config();
  const int local_layer = layer - w_.stage.layer_begin;
  const cuda::MoeFfnWeightsView& w = w_.layers[local_layer].moe->view();
  cuda::MoeFfnScratch& s = *moe_scratch_;
  const int experts = c.num_experts, k = c.num_experts_per_tok;
  const int64_t m = nq.rows, pairs = m * k, h = c.hidden_size;
  const bool on_device = exchange.device_memory();
  const bool bf16 = x.result_dtype == ExpertResultDtype::kBf16;
  const int64_t result_row = h * ExpertResultBytes(x.result_dtype);
  cudaStream_t stream = stream_;

  // 1. Route this rank's tokens; group the pairs by destination; gather their rows.
  std::fill(x.send_counts.begin(), x.send_counts.end(), 0);
  if (m > 0) {
    RETURN_IF_ERROR(cuda::RouteTokens(w, moe_shape_, n, m, s, stream));
    RETURN_IF_ERROR(
        cuda::MapExperts(s.experts(), pairs, x.key_of_expert.get(), experts, x.keys.get(), stream));
    cuda::ExpertGrouping grouping;
    grouping.expert_rows = x.key_rows.get();
    grouping.source_rows = x.source_rows.get();
    grouping.row_expert = x.row_key.get();
    grouping.pair_rows = x.pair_rows.get();
    grouping.items = x.items.get();
    grouping.num_items = x.num_items.get();
    RETURN_IF_ERROR(cuda::GroupByExpert(x.keys.get(), m, k, experts, kKeyRowsPerItem,
                                        cuda::MaxGroupedItems(pairs, experts, kKeyRowsPerItem),
                                        grouping, stream));
    RETURN_IF_ERROR(cuda::GatherDispatchRows(nq.values, nq.stride, nq.scales, x.source_rows.get(),
                                             x.row_key.get(), x.expert_of_key.get(), pairs,
                                             x.row_bytes, x.send_values.get(), x.send_scales.get(),
                                             x.send_experts.get(), stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x.host_key_rows.get(), x.key_rows.get(),
                                                  sizeof(int32_t) * (experts + 1),
                                                  cudaMemcpyDeviceToHost, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    for (int p = 0; p < x.ranks; ++p) {
      x.send_counts[p] = x.host_key_rows[x.first_key[p + 1]] - x.host_key_rows[x.first_key[p]];
    }
  }

  // 2. Counts, then the rows themselves.
  RETURN_IF_ERROR(exchange.ExchangeCounts(x.send_counts, x.recv_counts));
  const int64_t received = std::accumulate(x.recv_counts.begin(), x.recv_counts.end(), int64_t{0});
  if (received > x.max_pairs) {
    return absl::InternalError(absl::StrCat(
        "expert-parallel rank ", exchange.rank(), " is sent ", received, " rows at layer ", layer,
        "; it has room for ", x.max_pairs, " (max_batch_tokens x top_k: the group's step holds at ",
        "most max_batch_tokens tokens in all)"));
  }
  if (on_device) {
    RETURN_IF_ERROR(exchange.Dispatch(x.row_bytes, x.send_values.get(), x.send_scales.get(),
                                      x.send_experts.get(), x.recv_values.get(),
                                      x.recv_scales.get(), x.recv_experts.get()));
  } else {
    // Host copies: values, then scales, then expert ids, for the rows sent and received.
    const int64_t per_row = x.row_bytes + 8;
    x.host_send.resize(pairs * per_row);
    x.host_recv.resize(received * per_row);
    uint8_t* hs = x.host_send.data();
    RETURN_IF_ERROR(CopyToHost(hs, x.send_values.get(), pairs * x.row_bytes, stream));
    RETURN_IF_ERROR(CopyToHost(hs + pairs * x.row_bytes, x.send_scales.get(), pairs * 4, stream));
    RETURN_IF_ERROR(
        CopyToHost(hs + pairs * (x.row_bytes + 4), x.send_experts.get(), pairs * 4, stream));
    uint8_t* hr = x.host_recv.data();
    RETURN_IF_ERROR(exchange.Dispatch(
        x.row_bytes, reinterpret_cast<const int8_t*>(hs),
        reinterpret_cast<const float*>(hs + pairs * x.row_bytes),
        reinterpret_cast<const int32_t*>(hs + pairs * (x.row_bytes + 4)),
        reinterpret_cast<int8_t*>(hr), reinterpret_cast<float*>(hr + received * x.row_bytes),
        reinterpret_cast<int32_t*>(hr + received * (x.row_bytes + 4))));
    RETURN_IF_ERROR(CopyToDevice(x.recv_values.get(), hr, received * x.row_bytes, stream));
    RETURN_IF_ERROR(
        CopyToDevice(x.recv_scales.get(), hr + received * x.row_bytes, received * 4, stream));
    RETURN_IF_ERROR(CopyToDevice(x.recv_experts.get(), hr + received * (x.row_bytes + 4),
                                 received * 4, stream));
  }

  // 3. This rank's experts over every row received, all origins at once.
  absl::Status local_error;
  if (received > 0) {
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x.bad.get(), 0, sizeof(int32_t), stream));
    RETURN_IF_ERROR(cuda::LocalExpertRows(
        x.recv_values.get(), received, x.row_bytes, x.recv_experts.get(), x.local_index.get(),
        experts, x.recv_sums.get(), x.recv_local.get(), x.bad.get(), stream));
    cuda::Int8Activations rows;
    rows.values = x.recv_values.get();
    rows.scales = x.recv_scales.get();
    rows.sums = x.recv_sums.get();
    rows.rows = received;
    rows.cols = h;
    rows.stride = x.row_bytes;
    RETURN_IF_ERROR(
        cuda::ExpertProducts(w, moe_shape_.eps, x.recv_local.get(), 1, rows, s, stream));
    RETURN_IF_ERROR(cuda::ResultsInReceivedOrder(s.y(), s.pair_rows(), received, h, bf16,
                                                 x.results.get(), stream));
    const int held = static_cast<int>(x.held.size());
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x.host_expert_rows.get(), s.expert_rows(),
                                                  sizeof(int32_t) * (held + 1),
                                                  cudaMemcpyDeviceToHost, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x.host_bad.get(), x.bad.get(), sizeof(int32_t),
                                                  cudaMemcpyDeviceToHost, stream));
    BITSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    if (x.host_bad[0] != 0) {
      // Still answered below (with whatever the rows computed), so the group stays in step.
      local_error.Update(absl::InternalError(
          absl::StrCat("expert-parallel rank ", exchange.rank(), " received a row for expert ",
                       x.host_bad[0] - 1, ", which it does not hold")));
    } else {
      int64_t* load = expert_rows_.data() + int64_t{local_layer} * experts;
      for (int i = 0; i < held; ++i) {
        load[x.held[i]] += x.host_expert_rows[i + 1] - x.host_expert_rows[i];
      }
    }
  }

  // 4. Results back to the rows' origins, then the weighted sum here.
  if (on_device) {
    RETURN_IF_ERROR(exchange.Combine(h, x.results.get(), x.back.get()));
  } else {
    x.host_results.resize(received * result_row);
    x.host_back.resize(pairs * result_row);
    RETURN_IF_ERROR(
        CopyToHost(x.host_results.data(), x.results.get(), received * result_row, stream));
    RETURN_IF_ERROR(exchange.Combine(h, x.host_results.data(), x.host_back.data()));
    RETURN_IF_ERROR(CopyToDevice(x.back.get(), x.host_back.data(), pairs * result_row, stream));
  }
  RETURN_IF_ERROR(local_error);
  if (m == 0) return absl::OkStatus();
  const float* y = reinterpret_cast<const float*>(x.back.get());
  if (bf16) {
    RETURN_IF_ERROR(cuda::Bf16ToFloat(reinterpret_cast<const uint16_t*>(x.back.get()), pairs * h,
                                      s.y(), stream));
    y = s.y();
  }
  return cuda::SharedExpertAndCombine(w, moe_shape_, nq, y, x.pair_rows.get(), out, s, gemm_.get(),
                                      stream);
}

}  // namespace bitserve
