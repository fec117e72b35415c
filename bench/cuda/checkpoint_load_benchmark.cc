// The host side of loading a checkpoint onto a GPU (not a test; no GPU needed): per layer, decode
// the safetensors' 2-bit weights to int8 (CheckpointReader::Layers, every CPU thread) and repack
// them into the kernels' tile layout (PackTernaryMatrix, every CPU thread), as LoadCudaModelWeights
// does before each upload. For a 70B model this is most of the engine's load time. First the
// model's ends (StageEnds: the bf16 embedding / LM head copied and checked to be finite), beside a
// plain copy of the same bytes measured in the same run (what the finiteness check adds).
//
//   checkpoint_load_benchmark --model DIR [--layers N]   (default: every layer)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cuda/ternary/ternary_layout.h"
#include "runtime/checkpoint/model_weights.h"
#include "runtime/checkpoint/safetensors_archive.h"

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
  {
    // Beside StageEnds, in the same run: what it did before the check (a fresh vector, the bytes
    // copied in), and the check alone over those bytes. Best of 3; the pages are cached after the
    // first pass.
    auto archive = bitserve::SafetensorsArchive::Open(model);
    if (!archive.ok()) return 1;
    const auto* e = archive->Find("model.embed_tokens.weight");
    const int64_t n = static_cast<int64_t>(e->bytes.size() / 2);
    double copy_s = 1e9, check_s = 1e9, ends_s = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      std::vector<uint16_t> copy(static_cast<size_t>(n));
      std::memcpy(copy.data(), e->bytes.data(), e->bytes.size());
      copy_s = std::min(copy_s, std::chrono::duration<double>(Clock::now() - t0).count());
      const auto t1 = Clock::now();
      uint32_t any = 0;
      for (int64_t i = 0; i < n; ++i) any |= (copy[i] & 0x7F80u) == 0x7F80u;
      check_s = std::min(check_s, std::chrono::duration<double>(Clock::now() - t1).count());
      if (any) std::printf("(a non-finite element)\n");
      copy = std::vector<uint16_t>();
      const auto t2 = Clock::now();
      auto ends = reader->StageEnds(bitserve::PipelineStage{});
      if (!ends.ok()) {
        std::fprintf(stderr, "%s\n", ends.status().ToString().c_str());
        return 1;
      }
      ends_s = std::min(ends_s, std::chrono::duration<double>(Clock::now() - t2).count());
    }
    std::printf(
        "ends (embedding%s, %.2f GB): StageEnds (copy + finiteness check on %d threads) %.3f s; "
        "allocate + copy without a check %.3f s; the check alone on one thread %.3f s\n",
        reader->config().tie_word_embeddings ? ", tied LM head" : " + LM head",
        e->bytes.size() / 1e9, bitserve::cpu::NumThreads(), ends_s, copy_s, check_s);
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
      for (bitserve::TernaryMatrix* m :
           {&w.q, &w.k, &w.v, &w.o, &w.ffn.gate, &w.ffn.up, &w.ffn.down}) {
        auto packed =
            bitserve::cuda::PackTernaryMatrix(m->values.data(), m->rows, m->cols, m->scale);
        if (!packed.ok()) return 1;
        codes += m->rows * m->cols;
      }
    }
    decode_s += std::chrono::duration<double>(t1 - t0).count();
    pack_s += std::chrono::duration<double>(Clock::now() - t1).count();
  }
  std::printf(
      "%d layers on %d threads: decode %.2f s, pack %.2f s (%.0f M codes/s), %.3f s per layer\n", n,
      bitserve::cpu::NumThreads(), decode_s, pack_s, codes / pack_s / 1e6, (decode_s + pack_s) / n);
  return 0;
}
