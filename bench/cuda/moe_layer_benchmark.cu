// The MoE FFN block on one GPU (kernels/cuda/moe/moe_ffn.cuh; not a test): at 1 .. 4,096 tokens,
// beside (a) the same active parameters run as ONE dense ternary FFN (gate/up of k * expert width,
// the fused epilogue, down: what grouping by expert costs over a dense product) and (b) the
// bandwidth floor of the bytes the block must read: the router and the experts the tokens can
// touch, E * (1 - (1 - k/E)^tokens) of E under random routing.
//
//   moe_layer_benchmark [--shapes qwen3-30b-a3b,qwen3-235b-a22b] [--tokens 1,4,16,64,256,1024,4096]
//                       [--sweep]
//
// --sweep: instead, the grouped gate/up and down products alone under every compiled grouped GEMV
// and tiled configuration (AllGroupedGemvConfigs, AllGroupedTiledConfigs) and rows-per-item near
// the routing's mean, beside the
// default choice (what DefaultGroupedGemvConfig / GroupedRowsPerItem are fitted from).
//
// Times are graph replays (bench/cuda/graph_timing.cuh) rotating over 4 layers' weights so that
// the L2 cannot hold them; random routing (random inputs, random router).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/cuda/graph_timing.cuh"
#include "kernels/cuda/moe/moe_ffn.cuh"
#include "kernels/cuda/norm/act_quant.cuh"
#include "kernels/cuda/norm/gated_ffn.cuh"
#include "kernels/cuda/ternary/ternary_gemm.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

struct Shape {
  std::string name;
  int64_t hidden, inter;
  int experts, top_k;
};

const std::vector<Shape> kShapes = {{"qwen3-30b-a3b", 2048, 768, 128, 8},
                                    {"qwen3-235b-a22b", 4096, 1536, 128, 8},
                                    {"mixtral-8x7b", 4096, 14336, 8, 2}};

template <typename T>
DeviceBuffer<T> Buffer(int64_t n) {
  auto b = DeviceBuffer<T>::Create(n);
  if (!b.ok()) {
    std::cerr << b.status() << "\n";
    std::exit(1);
  }
  return std::move(b).value();
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::cerr << s << "\n";
    std::exit(1);
  }
}

void Run(const Shape& shape, const std::vector<int>& token_counts, double bandwidth) {
  constexpr int kCopies = 4;
  const MoeShape moe{shape.hidden, shape.experts, shape.top_k, true, 1e-5f};
  const int64_t h = shape.hidden, inter = shape.inter, dense = shape.top_k * shape.inter;
  const int max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
  std::vector<DeviceMoeWeights> layers;
  for (int i = 0; i < kCopies; ++i) {
    auto w = DeviceMoeWeights::Random(moe, inter, 0, 1000 + i);
    Check(w.status());
    layers.push_back(std::move(w).value());
  }
  // The dense FFN of the active width, 2 * kCopies copies (they are smaller than the L2 alone).
  std::vector<DeviceTernaryMatrix> gate_up, down;
  const TernaryOutputScale unit{TernaryOutputScale::Mode::kMultiply, 0.01f};
  for (int i = 0; i < 2 * kCopies; ++i) {
    auto gu = DeviceTernaryMatrix::Random(2 * dense, h, {}, 2000 + i);
    auto dn = DeviceTernaryMatrix::Random(h, dense, unit, 3000 + i);
    Check(gu.status());
    Check(dn.status());
    gate_up.push_back(std::move(gu).value());
    down.push_back(std::move(dn).value());
  }
  auto scratch = MoeFfnScratch::Create(moe, inter, 0, max_tokens);
  Check(scratch.status());
  auto gemm =
      TernaryGemm::Create(std::max<int64_t>(2 * dense, h), std::max<int64_t>(dense, h), max_tokens);
  Check(gemm.status());
  DeviceBuffer<float> n = Buffer<float>(max_tokens * h), out = Buffer<float>(max_tokens * h);
  DeviceBuffer<float> sub_norm = Buffer<float>(dense);
  FillRandomFloat<<<kFillBlocks, 256>>>(n.get(), max_tokens * h, 11, 2.0f);
  FillRandomFloat<<<kFillBlocks, 256>>>(sub_norm.get(), dense, 12, 1.0f);
  const int64_t hs = PaddedInputs(h), ds = PaddedInputs(dense);
  DeviceBuffer<int8_t> q = Buffer<int8_t>(max_tokens * hs), dq = Buffer<int8_t>(max_tokens * ds);
  DeviceBuffer<float> qs = Buffer<float>(max_tokens), dqs = Buffer<float>(max_tokens);
  DeviceBuffer<int32_t> qsum = Buffer<int32_t>(max_tokens), dqsum = Buffer<int32_t>(max_tokens);
  DeviceBuffer<int32_t> acc = Buffer<int32_t>(max_tokens * 2 * dense);
  const Int8ActivationsOut qo{q.get(), qs.get(), qsum.get(), hs};
  const Int8ActivationsOut dqo{dq.get(), dqs.get(), dqsum.get(), ds};
  Check(QuantizeActivations(n.get(), max_tokens, h, qo, nullptr));
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  const double expert_bytes = static_cast<double>(layers[0].expert_bytes()) / shape.experts;
  const double router_bytes = 2.0 * shape.experts * h;

  std::printf(
      "\n%s MoE block (hidden %lld, %d experts of %lld, top-%d) vs a dense FFN of width %lld\n",
      shape.name.c_str(), static_cast<long long>(h), shape.experts, static_cast<long long>(inter),
      shape.top_k, static_cast<long long>(dense));
  std::printf(
      "| tokens | MoE block (us) | dense FFN, same active params (us) | MoE / dense | "
      "floor (us) | MoE / floor |\n|---:|---:|---:|---:|---:|---:|\n");
  for (int m : token_counts) {
    const Int8Activations x(qo, m, h);
    auto moe_us = TimePerCall(
        [&](int i) {
          return MoeFeedForward(layers[i % kCopies].view(), moe, n.get(), x, out.get(), *scratch,
                                gemm->get(), stream);
        },
        kCopies, stream);
    auto dense_us = TimePerCall(
        [&](int i) -> absl::Status {
          const int c = i % (2 * kCopies);
          RETURN_IF_ERROR(TernaryMatmulInt32(gemm->get(), gate_up[c].view(), x, acc.get(), stream));
          RETURN_IF_ERROR(GateUpRelu2NormQuantize(acc.get(), qs.get(), {}, {}, m, dense,
                                                  sub_norm.get(), 1e-5f, dqo, nullptr, stream));
          return TernaryMatmul(gemm->get(), down[c].view(), Int8Activations(dqo, m, dense),
                               out.get(), stream);
        },
        2 * kCopies, stream);
    Check(moe_us.status());
    Check(dense_us.status());
    const double touched =
        shape.experts * (1.0 - std::pow(1.0 - static_cast<double>(shape.top_k) / shape.experts, m));
    const double floor_us = (router_bytes + touched * expert_bytes) / bandwidth * 1e6;
    std::printf("| %d | %.1f | %.1f | %.2fx | %.1f | %.2fx |\n", m, *moe_us, *dense_us,
                *moe_us / *dense_us, floor_us, *moe_us / floor_us);
  }
  cudaStreamDestroy(stream);
}

// The grouped products alone: gate/up (int32 sums, gathered inputs) and down (float, grouped
// inputs) under each configuration and rows per item, on one random routing per token count.
void Sweep(const Shape& shape, const std::vector<int>& token_counts) {
  constexpr int kCopies = 4;
  const MoeShape moe{shape.hidden, shape.experts, shape.top_k, true, 1e-5f};
  const int64_t h = shape.hidden, inter = shape.inter;
  const int max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
  const int64_t max_pairs = static_cast<int64_t>(max_tokens) * shape.top_k;
  std::vector<DeviceMoeWeights> layers;
  for (int i = 0; i < kCopies; ++i) {
    auto w = DeviceMoeWeights::Random(moe, inter, 0, 1000 + i);
    Check(w.status());
    layers.push_back(std::move(w).value());
  }
  auto scratch = MoeFfnScratch::Create(moe, inter, 0, max_tokens);
  Check(scratch.status());
  DeviceBuffer<float> n = Buffer<float>(max_tokens * h);
  FillRandomFloat<<<kFillBlocks, 256>>>(n.get(), max_tokens * h, 11, 2.0f);
  const int64_t hs = PaddedInputs(h), is = PaddedInputs(inter);
  DeviceBuffer<int8_t> q = Buffer<int8_t>(max_tokens * hs), act = Buffer<int8_t>(max_pairs * is);
  DeviceBuffer<float> qs = Buffer<float>(max_tokens), act_s = Buffer<float>(max_pairs);
  DeviceBuffer<int32_t> qsum = Buffer<int32_t>(max_tokens), act_sum = Buffer<int32_t>(max_pairs);
  DeviceBuffer<float> act_f = Buffer<float>(max_pairs * inter);
  FillRandomFloat<<<kFillBlocks, 256>>>(act_f.get(), max_pairs * inter, 13, 2.0f);
  const Int8ActivationsOut qo{q.get(), qs.get(), qsum.get(), hs};
  const Int8ActivationsOut ao{act.get(), act_s.get(), act_sum.get(), is};
  Check(QuantizeActivations(n.get(), max_tokens, h, qo, nullptr));
  Check(QuantizeActivations(act_f.get(), max_pairs, inter, ao, nullptr));
  DeviceBuffer<int32_t> acc = Buffer<int32_t>(max_pairs * 2 * inter);
  DeviceBuffer<float> y = Buffer<float>(max_pairs * h);
  DeviceBuffer<int32_t> expert_rows = Buffer<int32_t>(shape.experts + 1),
                        source = Buffer<int32_t>(max_pairs),
                        row_expert = Buffer<int32_t>(max_pairs),
                        pair_rows = Buffer<int32_t>(max_pairs), num_items = Buffer<int32_t>(1);
  DeviceBuffer<GroupedProductItem> items = Buffer<GroupedProductItem>(max_pairs);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  std::printf("\n%s grouped products (gate/up [%lld, %lld], down [%lld, %lld]), us per call\n",
              shape.name.c_str(), static_cast<long long>(2 * inter), static_cast<long long>(h),
              static_cast<long long>(h), static_cast<long long>(inter));
  std::printf(
      "| tokens | rows/expert | rows/item | configuration | gate/up (us) | down (us) |\n"
      "|---:|---:|---:|---|---:|---:|\n");
  for (int m : token_counts) {
    const int64_t pairs = static_cast<int64_t>(m) * shape.top_k;
    Check(RouteTokens(layers[0].view(), moe, n.get(), m, *scratch, stream));
    const double mean = ExpectedRowsPerExpert(pairs, shape.experts);
    const int default_per_item = GroupedRowsPerItem(mean);
    for (int per_item : {1, 8, 16, 32, 64, 128, 256}) {
      if (per_item == 1 ? mean > 2.5 : (per_item > 4 * mean + 8 || per_item < mean / 4)) continue;
      const int max_items = MaxGroupedItems(pairs, shape.experts, per_item);
      const ExpertGrouping g{expert_rows.get(), source.get(), row_expert.get(),
                             pair_rows.get(),   items.get(),  num_items.get()};
      Check(GroupByExpert(scratch->experts(), m, shape.top_k, shape.experts, per_item, max_items, g,
                          stream));
      const auto time = [&](const TernaryGemvConfig* config,
                            const TernaryTiledConfig* tiled = nullptr) {
        GroupedRows rows{items.get(), num_items.get(), max_items, per_item, source.get(), config};
        rows.tiled = tiled;
        GroupedRows down_rows = rows;
        down_rows.source_rows = nullptr;
        auto gu = TimePerCall(
            [&](int i) {
              return GroupedTernaryGemv(layers[i % kCopies].view().gate_up,
                                        Int8Activations(qo, m, h), rows, nullptr, acc.get(),
                                        stream);
            },
            kCopies, stream);
        auto dn = TimePerCall(
            [&](int i) {
              return GroupedTernaryGemv(layers[i % kCopies].view().down,
                                        Int8Activations(ao, pairs, inter), down_rows, y.get(),
                                        nullptr, stream);
            },
            kCopies, stream);
        return std::pair<double, double>(gu.ok() ? *gu : -1.0, dn.ok() ? *dn : -1.0);
      };
      const char* mark = per_item == default_per_item ? " (default rows/item)" : "";
      const auto [dgu, ddn] = time(nullptr);
      std::printf("| %d | %.1f | %d%s | default | %.1f | %.1f |\n", m, mean, per_item, mark, dgu,
                  ddn);
      for (const TernaryGemvConfig& c : AllGroupedGemvConfigs()) {
        if ((c.kind == TernaryGemvConfig::Kind::kDp4a) != (per_item == 1)) continue;
        if (c.kind == TernaryGemvConfig::Kind::kMma && c.tokens > 2 * per_item) continue;
        const auto [gu, dn] = time(&c);
        std::printf("| %d | %.1f | %d | %s | %.1f | %.1f |\n", m, mean, per_item, c.Name().c_str(),
                    gu, dn);
      }
      for (const TernaryTiledConfig& c : AllGroupedTiledConfigs()) {
        if (per_item < 16 || per_item % c.block_tokens() != 0) continue;
        const auto [gu, dn] = time(nullptr, &c);
        std::printf("| %d | %.1f | %d | %s | %.1f | %.1f |\n", m, mean, per_item, c.Name().c_str(),
                    gu, dn);
      }
    }
  }
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace bitserve::cuda

int main(int argc, char** argv) {
  using namespace bitserve::cuda;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string shapes = "qwen3-30b-a3b,qwen3-235b-a22b", tokens = "1,4,16,64,256,1024,4096";
  bool sweep = false;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--sweep") {
      sweep = true;
      --i;
    } else if (i + 1 >= argc) {
      std::cerr << "flag " << flag << " needs a value\n";
      return 2;
    } else if (flag == "--shapes") {
      shapes = argv[i + 1];
    } else if (flag == "--tokens") {
      tokens = argv[i + 1];
    } else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  std::vector<int> counts;
  for (absl::string_view t : absl::StrSplit(tokens, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(t, &v) || v < 1) {
      std::cerr << "--tokens: bad count " << t << "\n";
      return 2;
    }
    counts.push_back(v);
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double bw = CopyBandwidth();
  std::printf("GPU: %s; device-to-device copy bandwidth %.0f GB/s (read + written)\n", prop.name,
              bw / 1e9);
  for (absl::string_view name : absl::StrSplit(shapes, ',')) {
    bool found = false;
    for (const Shape& s : kShapes) {
      if (s.name == name) {
        sweep ? Sweep(s, counts) : Run(s, counts, bw);
        found = true;
      }
    }
    if (!found) {
      std::cerr << "unknown shape " << name << "\n";
      return 2;
    }
  }
  return 0;
}
