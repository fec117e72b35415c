// The host side of loading a checkpoint onto a GPU (not a test; no GPU needed): per layer, decode
// the safetensors' 2-bit weights to int8 (CheckpointReader::Layers, every CPU thread) and repack them into
// the kernels' tile layout (PackTernaryMatrix, every CPU thread), as LoadCudaModelWeights does
// before each upload. For a 70B model this is most of the engine's load time.
//
//   checkpoint_load_benchmark --model DIR [--layers N]   (default: every layer)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/cpu/parallel.h"
#include "kernels/cuda/ternary_layout.h"
#include "runtime/model_weights.h"

int main(int argc, char** argv) {
  using Clock = std::chrono::steady_clock;
  std::string model;
  int layers = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model") model = argv[i + 1];
    if (flag == "--layers") layers = std::atoi(argv[i + 1]);
  }
  auto reader = bitserve::CheckpointReader::Open(model);
  if (!reader.ok()) {
    std::fprintf(stderr, "%s\n", reader.status().ToString().c_str());
    return 1;
  }
  const int total = reader->config().num_hidden_layers;
  const int n = layers < 0 ? total : std::min(layers, total);
  const int chunk = std::clamp(bitserve::cpu::NumThreads(), 1, 8);
  double decode_s = 0, pack_s = 0;
  int64_t codes = 0;
  for (int begin = 0; begin < n; begin += chunk) {
    const auto t0 = Clock::now();
    auto decoded = reader->Layers(begin, std::min(n, begin + chunk));
    if (!decoded.ok()) {
      std::fprintf(stderr, "%s\n", decoded.status().ToString().c_str());
      return 1;
    }
    const auto t1 = Clock::now();
    for (bitserve::LayerWeights& w : *decoded) {
      for (bitserve::TernaryMatrix* m : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down}) {
        auto packed = bitserve::cuda::PackTernaryMatrix(m->values.data(), m->rows, m->cols, m->scale);
        if (!packed.ok()) return 1;
        codes += m->rows * m->cols;
      }
    }
    decode_s += std::chrono::duration<double>(t1 - t0).count();
    pack_s += std::chrono::duration<double>(Clock::now() - t1).count();
  }
  std::printf("%d layers on %d threads: decode %.2f s, pack %.2f s (%.0f M codes/s), %.3f s per layer\n", n,
              bitserve::cpu::NumThreads(), decode_s, pack_s, codes / pack_s / 1e6, (decode_s + pack_s) / n);
  return 0;
}
