// The MoE FFN block on one GPU (kernels/cuda/moe/moe_ffn.cuh; not a test): at 1 .. 4,096 tokens,
// beside (a) the same active parameters run as ONE dense ternary FFN (gate/up of k * expert width,
// the fused epilogue, down: what grouping by expert costs over a dense product) and (b) the
// bandwidth floor of the bytes the block must read: the router and the experts the tokens can
// touch, E * (1 - (1 - k/E)^tokens) of E under random routing.
//
//   moe_layer_benchmark [--shapes qwen3-30b-a3b,qwen3-235b-a22b] [--tokens 1,4,16,64,256,1024,4096]
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

}  // namespace
}  // namespace bitserve::cuda

int main(int argc, char** argv) {
  using namespace bitserve::cuda;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string shapes = "qwen3-30b-a3b,qwen3-235b-a22b", tokens = "1,4,16,64,256,1024,4096";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--shapes") {
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
        Run(s, counts, bw);
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
